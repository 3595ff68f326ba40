"""The lists' durable spool, ``<data>/lists/spool``: each message delivery hands to a list
is kept here before the sender hears ``250``, then handled on the list manager's own time.

An entry is two files with one name: ``NAME.eml`` (the message, as received) and
``NAME.json`` (its :class:`~ourmail.interfaces.ListArrival`).  The message is written
(or hard-linked from delivery's file) and fsynced first; the JSON is written under a
temporary name, fsynced and renamed into place, and the directory fsynced: the JSON's
presence is what makes an entry whole.  A crash at any instant therefore leaves either no
JSON (the entry was never acknowledged; its message file is a leftover) or a whole entry.
:meth:`Spool.done` removes the JSON first, so a crash there leaves a message without JSON,
a leftover too.  :meth:`Spool.recover` removes leftovers at start.

Names sort in arrival order (nanoseconds, then a counter).  Every method blocks: call them
in a thread (``ListContext.run``).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from pathlib import Path
from typing import BinaryIO

import attrs

from ourmail.fsutil import fsync_dir, write_atomic
from ourmail.interfaces import ListArrival, MessageSource

MESSAGE = ".eml"
ARRIVAL = ".json"
#: The fields of a kept arrival (a newer version's others are left out).
KNOWN = frozenset(f.name for f in attrs.fields(ListArrival))
#: Copy unit when the source is a stream or a file elsewhere (never the whole message).
CHUNK = 256 * 1024


class Spool:
    """The spool directory ``root`` (made on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._counter = itertools.count()

    def _ready(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.root.parent)

    def keep(self, arrival: ListArrival, source: MessageSource) -> Path:
        """Keep ``source`` with ``arrival`` durably; the message file's path (the entry's
        name for :meth:`done`)."""
        self._ready()
        name = f"{time.time_ns():020d}-{next(self._counter):06d}-{os.getpid()}"
        message = self.root / f"{name}{MESSAGE}"
        try:
            _write_message(message, source)
            write_atomic(
                self.root / f"{name}{ARRIVAL}",
                json.dumps(attrs.asdict(arrival)).encode(),
            )
        except BaseException:
            message.unlink(missing_ok=True)
            raise
        return message

    def pending(self) -> list[tuple[ListArrival, Path]]:
        """The whole entries, in arrival order: each arrival with its message file."""
        if not self.root.is_dir():
            return []
        entries = []
        for meta in sorted(self.root.glob(f"*{ARRIVAL}")):
            message = meta.with_suffix(MESSAGE)
            try:
                fields = json.loads(meta.read_bytes())
                arrival = ListArrival(**{k: v for k, v in fields.items() if k in KNOWN})
            except (OSError, ValueError, TypeError, AttributeError):
                continue  # being removed by done(), or not ours
            if message.exists():
                entries.append((arrival, message))
        return entries

    def done(self, message: Path) -> None:
        """Remove the entry of ``message`` (handled)."""
        message.with_suffix(ARRIVAL).unlink(missing_ok=True)
        message.unlink(missing_ok=True)
        fsync_dir(self.root)

    def move(self, message: Path, to: Path) -> Path:
        """Move the entry of ``message`` to the directory ``to`` (handling it failed for
        good); the message's new path."""
        to.mkdir(parents=True, exist_ok=True)
        moved = to / message.name
        os.replace(message, moved)
        fsync_dir(to)
        meta = message.with_suffix(ARRIVAL)
        if meta.exists():
            os.replace(meta, moved.with_suffix(ARRIVAL))
            fsync_dir(to)
        fsync_dir(self.root)
        return moved

    def recover(self, min_age: float = 0.0) -> int:
        """Remove the leftovers of a crash (a message without its JSON, a JSON without its
        message, temporary files) whose inode changed at least ``min_age`` seconds ago (another
        process, an MX worker, may be writing a younger one); how many were removed."""
        if not self.root.is_dir():
            return 0
        names = {p.name for p in self.root.iterdir()}
        removed, now = 0, time.time()
        for name in names:
            stem, dot, suffix = name.rpartition(".")
            partner = {MESSAGE: ARRIVAL, ARRIVAL: MESSAGE}.get(f"{dot}{suffix}")
            if partner is not None and f"{stem}{partner}" in names:
                continue
            path = self.root / name
            try:
                if now - path.lstat().st_ctime < min_age:  # a new link changes ctime
                    continue
            except FileNotFoundError:
                continue
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            fsync_dir(self.root)
        return removed


def _write_message(path: Path, source: MessageSource) -> None:
    """``source`` at ``path``, fsynced: a hard link when it is a file on this file system,
    else a copy in chunks."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        _copy_stream_or_bytes(path, bytes(source))
        return
    if isinstance(source, os.PathLike):
        try:
            os.link(source, path)
        except OSError:  # another file system, or links not allowed: copy
            with open(source, "rb") as f:
                _copy_stream_or_bytes(path, f)
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    _copy_stream_or_bytes(path, source)


def _copy_stream_or_bytes(path: Path, source: bytes | BinaryIO) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            if isinstance(source, bytes):
                out.write(source)
            else:
                shutil.copyfileobj(source, out, CHUNK)
        os.fsync(fd)
    finally:
        os.close(fd)
