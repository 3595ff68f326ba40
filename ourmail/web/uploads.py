"""Attachments waiting for the message they were uploaded for: files on disk, one folder per
web session, never a whole file in memory.

Each upload is two files in ``<upload dir>/<session key>/``: ``<id>`` (the content) and
``<id>.json`` (its safe file name, type and size).  The session key is a hash of the session
id (the id itself, a secret, is never a path); an upload id is 16 hex digits made here, and
only names of that form are ever opened, so nothing the browser sends can reach another
path.  File names from the browser are only kept as :func:`safe_filename` makes them.

Every method does file I/O: call it in a thread (``deferToThread``), never on the reactor.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import attrs

from ourmail.web.attachments import safe_filename

#: Bytes copied at a time.
CHUNK = 1 << 16
_ID = re.compile(r"[0-9a-f]{16}")
#: A content type as the browser may name it (RFC 2045 §5.1 token "/" token), else generic.
_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}")


class TooLarge(Exception):
    """The upload would take the session's attachments over the limit (it was not kept)."""


@attrs.frozen
class Upload:
    """One attachment on disk."""

    id: str
    filename: str
    content_type: str
    size: int


def content_type(given: str | None, from_browser: bool = False) -> str:
    """The content type when it is a plain ``type/subtype``, else
    ``application/octet-stream``.  A browser's file is never taken as a message or a
    multipart (``message/*``, ``multipart/*``): those are copied into a message as they are
    (RFC 2046 §5), and a file from outside is not known to be one."""
    value = (given or "").split(";", 1)[0].strip().lower()
    if from_browser and value.startswith(("message/", "multipart/")):
        return "application/octet-stream"
    return value if _TYPE.fullmatch(value) else "application/octet-stream"


#: Ended sessions remembered (their ids are random: an old one never comes back).
MAX_ENDED = 100_000


class SessionEnded(Exception):
    """An upload for a session that has ended."""


class Uploads:
    """The uploads of every session, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # One upload at a time per session (uploads run in threads): the session's limit is
        # checked against what is really on disk.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        # Sessions that ended: an upload still under way for one leaves nothing behind.
        self._ended: collections.OrderedDict[str, None] = collections.OrderedDict()

    def _lock(self, session_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(session_id, threading.Lock())

    def _check_live(self, session_id: str) -> None:
        with self._locks_lock:
            if session_id in self._ended:
                raise SessionEnded(session_id)

    def folder(self, session_id: str) -> Path:
        """The session's folder (not created)."""
        return self.root / hashlib.sha256(session_id.encode()).hexdigest()[:32]

    def add(
        self,
        session_id: str,
        source: BinaryIO,
        filename: str | None,
        kind: str | None,
        limit: int,
    ) -> Upload:
        """Copy ``source`` (read to its end, in chunks) into a new upload; :class:`TooLarge`
        (and nothing kept) when the session's uploads would then exceed ``limit`` bytes."""
        with self._lock(session_id):
            return self._add(session_id, source, filename, kind, limit)

    def _add(
        self,
        session_id: str,
        source: BinaryIO,
        filename: str | None,
        kind: str | None,
        limit: int,
    ) -> Upload:
        self._check_live(session_id)
        folder = self.folder(session_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        used = sum(u.size for u in self.all(session_id))
        upload_id = secrets.token_hex(8)
        path = folder / upload_id
        size = 0
        try:
            with open(path, "xb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if used + size > limit:
                        raise TooLarge()
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        upload = Upload(upload_id, safe_filename(filename), content_type(kind, True), size)
        meta = {"filename": upload.filename, "content_type": upload.content_type, "size": size}
        (folder / f"{upload_id}.json").write_text(json.dumps(meta), "utf-8")
        return upload

    def add_bytes(
        self, session_id: str, chunks: Iterable[bytes], filename: str | None, kind: str | None
    ) -> Upload:
        """An upload made here (an attachment carried over from a message being answered,
        forwarded or resumed) from ``chunks``; not counted against a limit."""
        self._check_live(session_id)
        folder = self.folder(session_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        upload_id = secrets.token_hex(8)
        size = 0
        with open(folder / upload_id, "xb") as out:
            for chunk in chunks:
                size += len(chunk)
                out.write(chunk)
        upload = Upload(upload_id, safe_filename(filename), content_type(kind), size)
        meta = {"filename": upload.filename, "content_type": upload.content_type, "size": size}
        (folder / f"{upload_id}.json").write_text(json.dumps(meta), "utf-8")
        return upload

    def get(self, session_id: str, upload_id: str) -> Upload | None:
        """The upload, or None (no such id, or not an id at all)."""
        if not _ID.fullmatch(upload_id):
            return None
        try:
            meta = json.loads((self.folder(session_id) / f"{upload_id}.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return Upload(upload_id, meta["filename"], meta["content_type"], int(meta["size"]))

    def path(self, session_id: str, upload: Upload) -> Path:
        """Where the upload's content is."""
        return self.folder(session_id) / upload.id

    def all(self, session_id: str) -> list[Upload]:
        """Every upload of the session."""
        folder = self.folder(session_id)
        if not folder.is_dir():
            return []
        found = (self.get(session_id, p.name) for p in folder.iterdir() if _ID.fullmatch(p.name))
        return [u for u in found if u is not None]

    def remove(self, session_id: str, upload_ids: Iterable[str]) -> None:
        """Delete these uploads (unknown ids are ignored)."""
        folder = self.folder(session_id)
        for upload_id in upload_ids:
            if _ID.fullmatch(upload_id):
                for name in (upload_id, f"{upload_id}.json"):
                    (folder / name).unlink(missing_ok=True)

    def scratch(self, session_id: str) -> Path:
        """A new file name in the session's folder for a message being built."""
        self._check_live(session_id)
        folder = self.folder(session_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder / f"message-{secrets.token_hex(8)}.eml"

    def end(self, session_id: str) -> None:
        """The session ended: delete all its uploads (after an upload under way), and take
        no more for it."""
        with self._locks_lock:
            self._ended[session_id] = None
            while len(self._ended) > MAX_ENDED:
                self._ended.popitem(last=False)
        with self._lock(session_id):
            shutil.rmtree(self.folder(session_id), ignore_errors=True)
        with self._locks_lock:
            self._locks.pop(session_id, None)

    def clear(self) -> None:
        """Delete every session's uploads (at start-up: no session outlives the process)."""
        if self.root.is_dir():
            for entry in self.root.iterdir():
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else os.unlink(entry)
