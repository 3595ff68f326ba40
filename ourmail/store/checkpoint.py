"""``ourmail-index``: a checkpoint of a folder's journal fold and of its summary cache's offsets.

Opening a folder folds its journal (``journal.py``) and, at the first summary, reads where each
UID's line of the summary cache (``cache.py``) starts: a pass over every line, about a second
for 100,000 messages, paid again by every process after every restart.  The checkpoint holds
the fold as it stood at one offset of the journal, and the cache's offsets as they stood at one
offset of the cache, as arrays a process reads back in milliseconds; it then folds only the
journal lines written after that offset.  Dovecot's ``dovecot.index`` plays the same part.

Like the journal and the cache it is only a cache of the Maildir: it is written without fsync
(by renaming a complete file into place, never in place), and one that does not match is left
aside and the journal folded from the start, as before it existed.  It matches when

* its checksum (over everything after the first line) holds, and it was written on a machine
  of the same byte order;
* the journal is the same file (inode) holding at least as many bytes, whose first line (which
  carries a random generation number, new at each rewrite of the journal) and whose bytes just
  before the checkpoint's offset are the ones the checkpoint recorded;
* likewise for the cache file, or its part of the checkpoint alone is left aside.

File layout: ``ourmail-index 2 <CRC-32 in hex>``, one line of JSON (the fold's numbers, where
each section lies), then the sections (arrays of 64-bit numbers in the machine's byte order,
byte strings), each named once, in order, without overlap.  It is written into the folder's
``tmp/`` (which Maildir readers clean after 36 hours) and renamed into place under the folder
lock, only if the journal it marks is still the folder's (:func:`stage`).
"""

from __future__ import annotations

import json
import mmap
import os
import re
import secrets
import sys
import zlib
from array import array
from pathlib import Path
from typing import Any

import attrs

from ourmail.store.entrytable import Columns, EntryTable
from ourmail.store.journal import CHANGE_LOG, LACKING, FolderState, PendingSet

FILE_NAME = "ourmail-index"
#: The first line: the format's name and version, then the CRC-32 of the rest of the file.
MAGIC = b"ourmail-index 2 "
_FIRST_LINE = re.compile(rb"ourmail-index 2 ([0-9a-f]{8})\n")
#: The bytes just before an offset that identify a file's content up to it.
TAIL = 64
#: At most this much of a file's first line identifies it.
HEAD = 256
#: Changes kept for sessions catching up (QRESYNC, IDLE) in a checkpoint; older ones fall
#: back to a full comparison, as past ``CHANGE_LOG`` in memory.
CHANGES = min(10_000, CHANGE_LOG)
#: A checkpoint file larger than this (or a header line longer) is not read.
MAX_FILE = 1 << 30
MAX_HEADER = 1 << 20
#: The names a section may have: the columns, the flag sets (``with:`` a letter, ``without:``
#: a ``LACKING`` letter), the changes, the date order, the cache offsets.
_SECTION = re.compile(
    r"(uids|modseqs|sizes|dates|subs|bases|base_ends|infos|info_ends|change_modseqs|"
    r"change_uids|date_keys|date_uids|cache_uids|cache_starts|cache_lengths|with:[A-Za-z]|"
    rf"without:[{LACKING}])"
)
_NUMBERS = ("uidvalidity", "uidnext", "highestmodseq", "first_recent", "changes_floor",
            "lines", "last_added", "total_size")  # fmt: skip


@attrs.frozen
class Mark:
    """A point in an append-only file, recognisable after a restart."""

    inode: int
    offset: int
    head: bytes
    tail: bytes

    @classmethod
    def of(cls, fd: int, inode: int, offset: int) -> Mark:
        """The mark of ``offset`` in the open file ``fd`` (whose inode is ``inode``)."""
        head = os.pread(fd, min(HEAD, offset), 0)
        return cls(inode, offset, head.split(b"\n", 1)[0], _tail(fd, offset))

    @classmethod
    def of_bytes(cls, inode: int, data: bytes) -> Mark:
        """The mark of the end of a file about to hold ``data`` (whose inode is ``inode``)."""
        return cls(inode, len(data), data[:HEAD].split(b"\n", 1)[0], data[-TAIL:])

    def holds_for(self, fd: int) -> bool:
        """Whether ``fd`` is the file marked, grown or not."""
        st = os.fstat(fd)
        if st.st_ino != self.inode or st.st_size < self.offset:
            return False
        head = os.pread(fd, min(HEAD, self.offset), 0).split(b"\n", 1)[0]
        return head == self.head and _tail(fd, self.offset) == self.tail

    def to_json(self) -> dict[str, object]:
        return {"inode": self.inode, "offset": self.offset, "head": self.head.hex(),
                "tail": self.tail.hex()}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Mark:
        return cls(int(d["inode"]), int(d["offset"]), bytes.fromhex(str(d["head"])),  # type: ignore[call-overload]
                   bytes.fromhex(str(d["tail"])))  # fmt: skip


def _tail(fd: int, offset: int) -> bytes:
    start = max(0, offset - TAIL)
    return os.pread(fd, offset - start, start)


@attrs.frozen
class CacheOffsets:
    """Where each UID's summary line lies in the summary cache, up to ``mark``."""

    mark: Mark
    uids: array[int]
    starts: array[int]
    lengths: array[int]


@attrs.frozen
class Loaded:
    state: FolderState
    #: The journal offset the state is the fold of.
    offset: int
    cache: CacheOffsets | None


def encode(state: FolderState, journal: Mark, cache: CacheOffsets | None) -> bytes:
    """The checkpoint of ``state``, the fold of the journal up to ``journal``."""
    cols = state.entries.columns()
    sections: dict[str, array[int] | array[float] | bytes] = {
        "uids": cols.uids, "modseqs": cols.modseqs, "sizes": cols.sizes, "dates": cols.dates,
        "subs": cols.subs, "bases": cols.bases, "base_ends": cols.base_ends,
        "infos": cols.infos, "info_ends": cols.info_ends,
    }  # fmt: skip
    with_letter, without_letter = state.letter_sets()
    for letter, uids in with_letter.items():
        sections[f"with:{letter}"] = array("q", uids)
    for letter, uids in without_letter.items():
        sections[f"without:{letter}"] = array("q", uids)
    changes, floor = state.recent_changes(CHANGES)
    sections["change_modseqs"] = array("q", [m for m, _ in changes])
    sections["change_uids"] = array("q", [u for _, u in changes])
    date_keys, date_uids = state.date_order()
    sections["date_keys"] = array("d", date_keys)
    sections["date_uids"] = array("q", date_uids)
    if cache is not None:
        sections["cache_uids"] = cache.uids
        sections["cache_starts"] = cache.starts
        sections["cache_lengths"] = cache.lengths
    numbers = {name: getattr(state, name) for name in _NUMBERS}
    numbers["changes_floor"] = floor
    where, at, parts = {}, 0, []
    for name, data in sections.items():
        raw = data if isinstance(data, bytes) else data.tobytes()
        kind = "bytes" if isinstance(data, bytes) else data.typecode
        where[name] = [kind, at, len(raw)]
        parts.append(raw)
        at += len(raw)
    header = {
        "byteorder": sys.byteorder, "numbers": numbers, "stamp": state.stamp,
        "journal": journal.to_json(),
        "cache": None if cache is None else cache.mark.to_json(), "sections": where,
    }  # fmt: skip
    rest = json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(parts)
    return MAGIC + b"%08x\n" % zlib.crc32(rest) + rest


def stage(folder: Path, data: bytes) -> Path:
    """Write ``data`` to a new file in the folder's ``tmp/``; the caller renames it to
    ``folder / FILE_NAME`` (under the folder lock) or removes it."""
    tmp = folder / "tmp" / f"{FILE_NAME}.{os.getpid()}.{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb") as f:
            f.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def read(folder: Path, journal_fd: int, cache_fd: int | None) -> Loaded | None:
    """The checkpoint of the folder at ``folder`` if it matches its journal (open as
    ``journal_fd``); its cache offsets only if they match the cache (``cache_fd``, None if
    there is no cache file).  None when there is no checkpoint or it does not match: a file
    that cannot be read is never an error, the journal is folded instead."""
    try:
        with open(folder / FILE_NAME, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not len(MAGIC) < size <= MAX_FILE:
                return None
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        with mapped:
            return _read(mapped, journal_fd, cache_fd)
    except FileNotFoundError:
        return None
    except Exception:  # a damaged cache is folded around, never fatal
        return None


def _read(mapped: mmap.mmap, journal_fd: int, cache_fd: int | None) -> Loaded | None:
    first = _FIRST_LINE.match(mapped, 0, len(MAGIC) + 9)
    if first is None:
        return None
    start = first.end()
    end = mapped.find(b"\n", start, start + MAX_HEADER)
    if end < 0:
        return None
    with memoryview(mapped) as whole, whole[start:] as rest, whole[end + 1 :] as payload:
        if zlib.crc32(rest) != int(first.group(1), 16):
            return None
        header = json.loads(mapped[start:end])
        if header["byteorder"] != sys.byteorder:
            return None
        journal = Mark.from_json(header["journal"])
        if not journal.holds_for(journal_fd):
            return None
        sections = _sections(payload, header["sections"])
    state = _state(header, sections)
    cache = None
    if header["cache"] is not None and cache_fd is not None:
        mark = Mark.from_json(header["cache"])
        if mark.holds_for(cache_fd):
            cache = CacheOffsets(
                mark, sections["cache_uids"], sections["cache_starts"], sections["cache_lengths"]
            )
    return Loaded(state, journal.offset, cache)


def _sections(payload: memoryview, where: dict[str, list[object]]) -> dict[str, Any]:
    """The sections ``where`` names, each a known name, in order and without overlap."""
    sections: dict[str, Any] = {}
    at = 0
    for name, (kind, start, length) in where.items():
        if not (_SECTION.fullmatch(name) and isinstance(start, int) and isinstance(length, int)):
            raise ValueError(f"unknown section {name!r}")
        if start < at or length < 0:
            raise ValueError("sections out of order")
        at = start + length
        sections[name] = _section(payload, str(kind), start, length)
    return sections


def _section(payload: memoryview, kind: str, start: int, length: int) -> array[int] | bytes:
    if start < 0 or length < 0 or start + length > len(payload):
        raise ValueError("section out of bounds")
    raw = payload[start : start + length]
    if kind == "bytes":
        return raw.tobytes()
    if kind not in ("q", "d"):
        raise ValueError(f"unknown section kind {kind!r}")
    numbers = array(kind)
    numbers.frombytes(raw)
    return numbers


def _state(header: dict, sections: dict) -> FolderState:  # type: ignore[type-arg]
    """The fold the header and the sections describe."""
    cols = Columns(
        sections["uids"], sections["modseqs"], sections["sizes"], sections["dates"],
        sections["subs"], sections["bases"], sections["base_ends"], sections["infos"],
        sections["info_ends"],
    )  # fmt: skip
    n = len(cols.uids)
    same = (cols.modseqs, cols.sizes, cols.dates, cols.subs, cols.base_ends, cols.info_ends,
            sections["date_keys"], sections["date_uids"])  # fmt: skip
    if not all(len(c) == n for c in same):
        raise ValueError("columns of different lengths")
    if n and (
        cols.base_ends[-1] + n != len(cols.bases) or cols.info_ends[-1] + n != len(cols.infos)
    ):
        raise ValueError("names of another length than their ends say")
    state = FolderState(entries=EntryTable(cols if n else None))
    for name in _NUMBERS:
        setattr(state, name, int(header["numbers"][name]))
    stamp = header["stamp"]
    state.stamp = None if stamp is None else (int(stamp[0]), int(stamp[1]))
    state.by_letter = {
        name.split(":", 1)[1]: PendingSet(uids)
        for name, uids in sections.items()
        if name.startswith("with:")
    }
    state.lacking = {ch: PendingSet(sections[f"without:{ch}"]) for ch in LACKING}
    state.restore_changes(
        list(zip(sections["change_modseqs"], sections["change_uids"], strict=True))
    )
    state.restore_date_order(sections["date_keys"], sections["date_uids"])
    return state
