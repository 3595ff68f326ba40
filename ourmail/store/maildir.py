"""Maildir files: unique names, the ``:2,`` flag suffix, and durable writes.

Maildir (https://cr.yp.to/proto/maildir.html) with Maildir++ folders and Dovecot's conventions:
``,S=<size>`` and ``,W=<size>`` in the base name, keywords as the letters ``a``-``z`` mapped by the
folder's ``dovecot-keywords`` file, the internal date as the file's modification time.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import time
from pathlib import Path
from typing import BinaryIO

from ourmail.fsutil import fsync_dir

# Maildir info letters <-> RFC 3501 system flags (P, "passed", has no IMAP flag of its own).
FLAG_LETTERS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
LETTER_OF = {v: k for k, v in FLAG_LETTERS.items()}
SYSTEM_FLAGS = frozenset(FLAG_LETTERS.values())
_CANONICAL = {f.lower(): f for f in SYSTEM_FLAGS}
MAX_KEYWORDS = 26

_counter = itertools.count()
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


def canonical_flag(flag: str) -> str:
    """System flags are case-insensitive (RFC 3501 §2.3.2): ``\\SEEN`` -> ``\\Seen``."""
    return _CANONICAL.get(flag.lower(), flag)


def unique_base(size: int) -> str:
    """A new Maildir base name that no other delivery, here or on another host, will make."""
    now = time.time()
    sec, usec = int(now), int((now % 1) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_HOST},S={size},W={size}"


def split_name(filename: str) -> tuple[str, str]:
    """``base:2,FS`` -> (``base``, ``FS``); a name without info gives an empty info."""
    base, sep, info = filename.partition(":")
    if sep and info.startswith("2,"):
        return base, info[2:]
    return base, ""


def size_from_base(base: str) -> int | None:
    """The ``,W=`` (else ``,S=``) size Dovecot and ourmail put in base names, if present."""
    found: int | None = None
    for part in base.split(",")[1:]:
        if part.startswith("W=") and part[2:].isdigit():
            return int(part[2:])
        if part.startswith("S=") and part[2:].isdigit():
            found = int(part[2:])
    return found


def to_crlf(data: bytes) -> bytes:
    """Normalise bare LF and bare CR line endings to CRLF (RFC 5322 §2.3)."""
    if b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b""):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def make_maildir(path: Path) -> None:
    """Create ``path`` with ``cur/``, ``new/`` and ``tmp/`` (mode 0700)."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)


def deliver_file(
    folder_path: Path,
    source: bytes | BinaryIO | os.PathLike[str],
    info: str | None,
    mtime: float | None,
) -> str:
    """Durably place a message in a Maildir; returns its base name.  Blocking: run in a thread.

    Writes (or hard-links) into ``tmp/``, fsyncs the file, renames it into ``new/`` (``info`` None)
    or ``cur/`` (with ``:2,info``) and fsyncs that directory.  Only then is the message safe.
    """
    tmp_name = f"{time.time():.6f}.P{os.getpid()}Q{next(_counter)}.{_HOST}"
    tmp = folder_path / "tmp" / tmp_name
    if isinstance(source, os.PathLike):
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            _fsync_path(tmp)
        # A linked spool file is already fsynced by its writer.
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                if isinstance(source, bytes):
                    out.write(source)
                else:
                    shutil.copyfileobj(source, out, 1 << 16)
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        base = unique_base(os.stat(tmp).st_size)
        dest = (
            folder_path
            / ("new" if info is None else "cur")
            / (base if info is None else f"{base}:2,{info}")
        )
        os.rename(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    return base


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
