"""The vault's segment files: an append-only, hash-chained log of records (docs/vault-format.md).

Layout under the vault folder (``<data>/vault`` by default)::

    segments/00000001.seg    the records, in order; a new segment every SEGMENT_SIZE octets
    head                     "<seq> <hash>\\n" of the last record written (a check on the tail)
    lock                     flock(2)ed by whoever appends (the server, ``ourmail vault``)

Segments may be moved to other volumes (``[vault] roots``): a segment is found by its name
in the vault's own ``segments/`` folder or any of the extra roots, and new segments are always
created in the vault's own folder.

Implementation notes (keep these true when changing this module):

* Appends happen under an exclusive ``flock`` on ``lock``, so the server and the admin
  commands (separate processes) never interleave records; the tail (last seq and hash) is
  re-read under the lock whenever the last segment is not the size this process left it.
* :meth:`SegmentLog.append` writes without flushing: the caller makes it durable (the store's
  group commit, one ``syncfs``) or calls :meth:`SegmentLog.sync`.  Records are written before
  the mailbox files are renamed into place, so a crash can leave a record without its
  message, never a delivered message without its record.
* A frame cut short at the end of the last segment (a crash mid-write, never acknowledged) is
  truncated away when the log is opened for appending; anything else that does not parse is
  left for ``ourmail vault verify`` to report and stops appending (:class:`Damaged`).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from ourmail.fsutil import fsync_dir, fsync_file
from ourmail.vault import records
from ourmail.vault.records import GENESIS, FormatError, Record, Truncated

#: A new segment is started once the current one is this large.
SEGMENT_SIZE = 256 * 1024 * 1024
_NAME = re.compile(r"^(\d{8})\.seg$")

#: What :meth:`SegmentLog.append` takes per record: kind, fields, content (uncompressed) or None.
Item = tuple[str, dict[str, Any], bytes | None]


class Damaged(Exception):
    """The log does not parse where new records would go: appending stops (nothing is
    acknowledged that the vault cannot keep); ``ourmail vault verify`` says what is wrong."""


@attrs.frozen
class Position:
    """Where a record is: its segment number and the offset of its frame."""

    segment: int
    offset: int


def segment_name(number: int) -> str:
    return f"{number:08d}.seg"


class SegmentLog:
    """The segment files of one vault (see the module text).  Not thread-safe: one thread
    appends at a time (the committer's worker, or a command)."""

    def __init__(
        self,
        root: Path,
        extra_roots: Sequence[Path] = (),
        segment_size: int = SEGMENT_SIZE,
    ) -> None:
        self.root = root
        self.extra_roots = tuple(extra_roots)
        self.segment_size = segment_size
        #: (segment number, its size, last seq, last hash) as this process last left the tail.
        self._tail: tuple[int, int, int, str] | None = None
        #: The inode of the segment the tail is in: expiry rewrites a segment into a new file
        #: (ourmail/vault/expiry.py), which may happen to have the size remembered.
        self._tail_inode = 0
        #: Segments appended to since :meth:`flush_data` (True: created by the append).
        self._unflushed: dict[Path, bool] = {}

    # -- reading ------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self.root / "segments"

    def segments(self) -> list[tuple[int, Path]]:
        """Every segment file, in order, wherever it lives."""
        found: dict[int, Path] = {}
        for folder in (self.directory, *(r / "segments" for r in self.extra_roots)):
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                match = _NAME.match(name)
                if match:
                    found.setdefault(int(match.group(1)), folder / name)
        return sorted(found.items())

    def path_of(self, segment: int) -> Path:
        name = segment_name(segment)
        for folder in (self.directory, *(r / "segments" for r in self.extra_roots)):
            if (folder / name).exists():
                return folder / name
        raise FileNotFoundError(f"vault segment {name} is in none of the vault's folders")

    def read_at(self, position: Position) -> Record:
        """The record at ``position`` (read with pread: no whole-segment read)."""
        with open(self.path_of(position.segment), "rb") as f:
            head = os.pread(f.fileno(), records.MAX_FRAME_LINE, position.offset)
            line = head[: head.find(b"\n") + 1]
            parts = line.split(b" ")
            if len(parts) != 4:
                raise FormatError(f"no record at {position}")
            total = len(line) + int(parts[2]) + int(parts[3]) + 1
            data = os.pread(f.fileno(), total, position.offset)
        record, _ = records.parse_frame(data, 0)
        return attrs.evolve(record, offset=position.offset)

    def records(self, start_seq: int = 1) -> Iterator[tuple[int, Record]]:
        """Every record from ``start_seq`` on, in order, with its segment number.  Raises
        FormatError (Truncated for a cut-short tail) where a segment does not parse."""
        for number, path in self.segments():
            following = self._first_seq_after(number)
            if following is not None and following <= start_seq:
                continue  # the whole segment is before start_seq
            yield from ((number, r) for r in _read_segment(path) if r.seq >= start_seq)

    def _first_seq_after(self, number: int) -> int | None:
        try:
            with open(self.path_of(number + 1), "rb") as f:
                return records.parse_segment_header(f.read(records.MAX_FRAME_LINE)).first_seq
        except (FileNotFoundError, FormatError):
            return None

    def head(self) -> tuple[int, str]:
        """The last seq and hash the ``head`` file names ((0, GENESIS) for a new vault)."""
        try:
            seq, digest = (self.root / "head").read_text().split()
            return int(seq), digest
        except (FileNotFoundError, ValueError):
            return 0, GENESIS

    # -- appending ----------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the vault's append lock (for a caller that appends several times)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def append(self, items: Sequence[Item], time: float) -> list[tuple[Position, Record]]:
        """Chain ``items`` after the last record and write them (no flush: see the module
        text).  The caller holds :meth:`locked`."""
        number, size, seq, prev = self._current_tail()
        written: list[tuple[Position, Record]] = []
        path = self.directory / segment_name(number)
        out = bytearray()
        if size == 0:
            out += records.segment_header(number, seq + 1, prev)
        start = size + len(out)
        for kind, fields, content in items:
            seq += 1
            record = records.make(seq, prev, kind, time, fields, content)
            frame = record.frame()
            written.append((Position(number, start), attrs.evolve(record, offset=start)))
            out += frame
            start += len(frame)
            prev = record.hash
        self._unflushed.setdefault(path, size == 0)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            view = memoryview(out)
            while view:
                view = view[os.write(fd, view) :]
            self._tail_inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        size += len(out)
        self._write_head(seq, prev)
        if size >= self.segment_size:
            number, size = number + 1, 0
        self._tail = (number, size, seq, prev)
        return written

    def flush_data(self) -> None:
        """fdatasync each segment appended to since the last call, and the segments' folder
        when one was created: the records are on disk before anything written after this
        (the committer calls it before it places a batch's mailbox files, so that not even a
        power cut leaves a mailbox copy without its record)."""
        dirty, self._unflushed = self._unflushed, {}
        for path, created in dirty.items():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(path.parent)

    def _write_head(self, seq: int, digest: str) -> None:
        """Overwrite ``head`` in place: one fixed-width line, so a write never leaves a
        shorter line's tail behind, and no rename per batch (the store's ``syncfs``, or
        :meth:`sync`, makes it durable with the records)."""
        fd = os.open(self.root / "head", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            line = f"{seq:020d} {digest}\n".encode()
            os.pwrite(fd, line, 0)
            os.ftruncate(fd, len(line))
        finally:
            os.close(fd)

    def sync(self) -> None:
        """fsync the last segment, ``head`` and their folder (for appends outside the store's
        group commit: the admin commands)."""
        for _, path in self.segments()[-1:]:
            fsync_file(path)
        fsync_file(self.root / "head")
        fsync_dir(self.directory)
        fsync_dir(self.root)

    def _current_tail(self) -> tuple[int, int, int, str]:
        """The tail as it is on disk now: this process's memory of it when the last segment
        has not changed size since, else read again (another process appended)."""
        existing = [(n, p) for n, p in self.segments() if p.parent == self.directory]
        if not existing:
            if self.segments():
                last = self.segments()[-1][0]
                seq, digest = self._scan_tail(self.path_of(last))
                return last + 1, 0, seq, digest
            return 1, 0, 0, GENESIS
        number, path = existing[-1]
        stat = path.stat()
        size = stat.st_size
        if self._tail is not None:
            t_number, t_size = self._tail[:2]
            if t_number == number and t_size == size and stat.st_ino == self._tail_inode:
                return self._tail
            if t_number == number + 1 and t_size == 0 and size >= self.segment_size:
                return self._tail
        seq, digest = self._scan_tail(path)
        size = path.stat().st_size
        if size >= self.segment_size:
            return number + 1, 0, seq, digest
        return number, size, seq, digest

    def _scan_tail(self, path: Path) -> tuple[int, str]:
        """Read a segment to its last whole record; cut a frame left half-written by a crash."""
        data = path.read_bytes()
        header = records.parse_segment_header(data)
        seq, digest = header.first_seq - 1, header.prev
        offset = header.length
        while offset < len(data):
            try:
                record, offset_after = records.parse_frame(data, offset)
            except Truncated:
                os.truncate(path, offset)
                break
            except FormatError as e:
                raise Damaged(f"{path.name}: {e}") from None
            seq, digest, offset = record.seq, record.hash, offset_after
        return seq, digest


def _read_segment(path: Path) -> Iterator[Record]:
    with open(path, "rb") as f:
        data = f.read()
    header = records.parse_segment_header(data)
    offset = header.length
    while offset < len(data):
        record, offset = records.parse_frame(data, offset)
        yield record
