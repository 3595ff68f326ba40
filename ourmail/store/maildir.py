"""Maildir files: unique names, the ``:2,`` flag suffix, and durable writes.

Maildir (https://cr.yp.to/proto/maildir.html) with Maildir++ folders and Dovecot's conventions:
``,S=<size>`` and ``,W=<size>`` in the base name, keywords as the letters ``a``-``z`` mapped by the
folder's ``dovecot-keywords`` file, the internal date as the file's modification time.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import time
from pathlib import Path
from typing import BinaryIO

import attrs

from ourmail.fsutil import fsync_file, write_atomic
from ourmail.mime.structure import to_crlf
from ourmail.mime.summary import Summary, summarize

# Maildir info letters <-> RFC 3501 system flags (P, "passed", has no IMAP flag of its own).
FLAG_LETTERS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
LETTER_OF = {v: k for k, v in FLAG_LETTERS.items()}
MAX_KEYWORDS = 26

_counter = itertools.count()
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


KEYWORDS = "dovecot-keywords"


def read_keywords(folder_path: Path) -> list[str]:
    """A folder's ``dovecot-keywords``: ``<index> <name>`` lines, index 0 being letter ``a``.

    Gaps stay as empty strings; indices beyond ``z`` are ignored.
    """
    words: list[str] = []
    with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):
        for line in (folder_path / KEYWORDS).read_text("utf-8").splitlines():
            idx, _, word = line.partition(" ")
            if idx.isdigit() and int(idx) < MAX_KEYWORDS and word:
                words.extend([""] * (int(idx) + 1 - len(words)))
                words[int(idx)] = word
    return words


def write_keywords(folder_path: Path, keywords: list[str]) -> None:
    """Replace the folder's ``dovecot-keywords`` (empty entries keep their index free)."""
    text = "".join(f"{i} {w}\n" for i, w in enumerate(keywords) if w)
    write_atomic(folder_path / KEYWORDS, text.encode("utf-8"), 0o600)


def flags_from_info(info: str | None, keywords: list[str]) -> frozenset[str]:
    """The flags a Maildir info string stands for, given the folder's keywords."""
    flags = set()
    for ch in info or "":
        if ch in FLAG_LETTERS:
            flags.add(FLAG_LETTERS[ch])
        elif "a" <= ch <= "z":
            idx = ord(ch) - ord("a")
            if idx < len(keywords) and keywords[idx]:
                flags.add(keywords[idx])
    return frozenset(flags)


def unique_base(size: int) -> str:
    """A new Maildir base name that no other delivery, here or on another host, will make."""
    now = time.time()
    sec, usec = int(now), int((now % 1) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_HOST},S={size},W={size}"


def split_name(filename: str) -> tuple[str, str | None]:
    """``base:2,FS`` -> (``base``, ``FS``); a name without ``:2,`` gives None."""
    base, sep, info = filename.partition(":")
    if sep and info.startswith("2,"):
        return base, info[2:]
    return filename, None


def size_from_base(base: str) -> int | None:
    """The ``,W=`` (else ``,S=``) size Dovecot and ourmail put in base names, if present."""
    found: int | None = None
    for part in base.split(",")[1:]:
        # At most 15 digits: a larger "size" is not one (and would not fit the indexes).
        if part.startswith("W=") and part[2:].isdigit() and len(part) <= 17:
            return int(part[2:])
        if part.startswith("S=") and part[2:].isdigit() and len(part) <= 17:
            found = int(part[2:])
    return found


def make_maildir(path: Path) -> None:
    """Create ``path`` with ``cur/``, ``new/`` and ``tmp/`` (mode 0700)."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)


@attrs.define
class Prepared:
    """A message written (or linked) into ``tmp/`` and fsynced, waiting to be committed."""

    tmp_name: str
    base: str
    size: int
    date: float
    summary: Summary | None


def prepare(
    folder_path: Path,
    source: bytes | BinaryIO | os.PathLike[str],
    mtime: float | None,
    summary: Summary | None = None,
    sync: bool = True,
    base: str | None = None,
) -> Prepared:
    """Write ``source`` into ``tmp/``, fsynced unless ``sync`` is False.  Blocking: run in a thread.

    ``sync=False`` is for callers that make a whole batch durable at once (``fsutil.syncfs``).
    ``base`` keeps a moved message's name (and so its POP3 UIDL); by default a new one is made.
    A path is hard-linked when it can be (its writer fsynced it), otherwise copied.  The summary
    is computed from the stored bytes unless one is given.
    """
    tmp_name = f"{time.time():.6f}.P{os.getpid()}Q{next(_counter)}.{_HOST}"
    tmp = folder_path / "tmp" / tmp_name
    try:
        if isinstance(source, os.PathLike):
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
                if sync:
                    fsync_file(tmp)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb", closefd=False) as out:
                    if isinstance(source, bytes):
                        out.write(source)
                    else:
                        shutil.copyfileobj(source, out, 1 << 16)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        st = os.stat(tmp)
        if summary is None:
            summary = summarize(source if isinstance(source, bytes) else tmp.read_bytes())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Prepared(tmp_name, base or unique_base(st.st_size), st.st_size, st.st_mtime, summary)


def renamed(path: Path) -> Path | None:
    """Where the message file at ``path`` (``<folder>/new|cur/<base>[:2,<flags>]``) is now.

    A flag change, here or by another process, renames the file within ``new/`` and ``cur/``
    and keeps its base name; None when no file has that base any more (expunged).  Reads the
    folder's directories: for the rare retry, never a hot path.
    """
    base = split_name(path.name)[0]
    for sub in ("cur", "new"):
        with contextlib.suppress(FileNotFoundError), os.scandir(path.parent.parent / sub) as it:
            for entry in it:
                if split_name(entry.name)[0] == base:
                    return Path(entry.path)
    return None


def crlf_size(path: Path) -> int:
    """The size a file has with CRLF line endings (for files other agents wrote with LF)."""
    return len(to_crlf(path.read_bytes()))


def clean_tmp(folder_path: Path, older_than: float = 36 * 3600) -> None:
    """Remove ``tmp/`` leftovers of crashed deliveries (the Maildir convention: 36 hours)."""
    limit = time.time() - older_than
    with os.scandir(folder_path / "tmp") as it:
        for de in it:
            try:
                if de.is_file() and de.stat().st_mtime < limit:
                    os.unlink(de.path)
            except FileNotFoundError:
                continue
