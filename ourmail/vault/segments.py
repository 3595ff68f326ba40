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
  commands (separate processes) never interleave records; the tail (last seq and hash) comes
  from the segments, never from ``head``: under the lock, when the last segment is the same
  file and has grown since this process left it, only the new part is read; otherwise the
  segment's frame lines are walked with ``pread`` (no whole-segment read).
* :meth:`SegmentLog.append` writes without flushing: the caller makes it durable (the store's
  group commit, one ``syncfs``) or calls :meth:`SegmentLog.sync`.  Records are written before
  the mailbox files are renamed into place, so a crash can leave a record without its
  message, never a delivered message without its record.
* A torn tail of the last segment (a frame cut short, zero octets a power cut left, or both:
  never acknowledged) is moved to ``<segment>.cut-<offset>`` and truncated away when the log
  appends next; anything else that does not parse is left for ``ourmail vault verify`` to
  report and stops appending (:class:`Damaged`).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
from twisted.logger import Logger

from ourmail.fsutil import fsync_dir, fsync_file
from ourmail.vault import records
from ourmail.vault.records import GENESIS, FormatError, Record, Truncated

#: A new segment is started once the current one is this large.
SEGMENT_SIZE = 256 * 1024 * 1024
log = Logger()

_NAME = re.compile(r"^(\d{8})\.seg$")

#: What :meth:`SegmentLog.append` takes per record: kind, fields, content (uncompressed, or
#: made ready by :func:`records.prepare`) or None.
Item = tuple[str, dict[str, Any], bytes | records.Content | None]


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
        crash_point: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        #: Called with a name between the steps of an append: the durability tests' hook
        #: (the server passes ``ourmail.store.faults.point``, see service.make_vault).
        self.crash_point = crash_point or _no_crash_point
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

    def tail(self) -> tuple[int, str]:
        """The last seq and hash as the segments hold them (the ``head`` file may be ahead of
        them after a power cut, or torn).  The caller holds :meth:`locked`."""
        _, _, seq, digest = self._current_tail()
        return seq, digest

    def append(self, items: Sequence[Item], time: float) -> list[tuple[Position, Record]]:
        """Chain ``items`` after the last record and write them, frame by frame (no flush: see
        the module text).  The caller holds :meth:`locked`."""
        number, size, seq, prev = self._current_tail()
        written: list[tuple[Position, Record]] = []
        path = self.directory / segment_name(number)
        self._unflushed.setdefault(path, size == 0)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._tail_inode = os.fstat(fd).st_ino
            if size == 0:
                size += _write_all(fd, records.segment_header(number, seq + 1, prev))
            for kind, fields, content in items:
                seq += 1
                record = records.make(seq, prev, kind, time, fields, content)
                written.append((Position(number, size), attrs.evolve(record, offset=size)))
                line = b"R %s %d %d\n" % (
                    record.hash.encode(),
                    len(record.meta),
                    len(record.content),
                )
                for part in (line, record.meta, record.content, b"\n"):
                    size += _write_all(fd, part)  # no copy of the content in one frame
                prev = record.hash
        finally:
            os.close(fd)
        self.crash_point("vault-appended")
        self._write_head(seq, prev)
        self.crash_point("vault-head-written")
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
        is the same file and has not changed size since; scanned on from the remembered end
        when it has only grown (another process appended); else scanned from its start."""
        existing = [(n, p) for n, p in self.segments() if p.parent == self.directory]
        if not existing:
            if self.segments():
                last = self.segments()[-1][0]
                seq, digest = self._scan_tail(self.path_of(last)) or (0, GENESIS)
                return last + 1, 0, seq, digest
            return 1, 0, 0, GENESIS
        number, path = existing[-1]
        stat = path.stat()
        found: tuple[int, str] | None = None
        if self._tail is not None:
            t_number, t_size, t_seq, t_digest = self._tail
            if t_number == number + 1 and t_size == 0 and stat.st_size >= self.segment_size:
                return self._tail
            if t_number == number and stat.st_ino == self._tail_inode and t_size > 0:
                if stat.st_size == t_size:
                    return self._tail
                if stat.st_size > t_size:
                    found = self._scan_tail(path, (t_size, t_seq, t_digest))
        if found is None:
            found = self._scan_tail(path)
        if found is None:  # a segment with nothing in it: the tail is in the one before
            self._tail = None
            before = [n for n, _ in self.segments() if n < number]
            seq, digest = 0, GENESIS
            if before:
                seq, digest = self._scan_tail(self.path_of(before[-1])) or (seq, digest)
            return number, 0, seq, digest
        seq, digest = found
        stat = path.stat()
        self._tail_inode = stat.st_ino
        if stat.st_size >= self.segment_size:
            return number + 1, 0, seq, digest
        return number, stat.st_size, seq, digest

    def _scan_tail(
        self, path: Path, start: tuple[int, int, str] | None = None
    ) -> tuple[int, str] | None:
        """The last seq and hash of the segment at ``path``, scanned from its header, or from
        ``start`` (an offset where a frame begins, with the seq and hash before it).  Frames
        are walked by their frame lines (pread: no whole-segment read); only the last one's
        metadata is parsed.  A torn tail (see :meth:`_cut_torn`) is cut off.  None when the
        segment holds nothing (not even its header line, which a crash left unwritten)."""
        with open(path, "rb") as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            if size == 0:
                return None
            if start is None:
                try:
                    header = records.parse_segment_header(os.pread(fd, records.MAX_FRAME_LINE, 0))
                except FormatError as e:
                    if self._cut_torn(fd, path, 0, size):
                        return None
                    raise Damaged(f"{path.name}: {e}") from None
                offset, seq, digest = header.length, header.first_seq - 1, header.prev
            else:
                offset, seq, digest = start
            last: tuple[int, records.FrameLine] | None = None
            while offset < size:
                head = os.pread(fd, records.MAX_FRAME_LINE, offset)
                try:
                    line = records.parse_frame_line(head, offset, size - offset)
                    end = offset + line.frame_length
                    if end > size:
                        raise Truncated(f"record at offset {offset} cut short")
                    if os.pread(fd, 1, end - 1) != b"\n":
                        raise FormatError(
                            f"record at offset {offset} does not end where its frame says"
                        )
                except FormatError as e:
                    if self._cut_torn(fd, path, offset, size):
                        break
                    raise Damaged(f"{path.name}: {e}") from None
                last, offset = (offset, line), end
            if last is None:
                return seq, digest
            at, line = last
            meta = os.pread(fd, line.meta_length, at + line.length)
        try:
            return records.Record(line.hash, meta).seq, line.hash
        except (ValueError, KeyError, TypeError) as e:
            raise Damaged(f"{path.name}: bad record metadata at offset {at}: {e}") from None

    def _cut_torn(self, fd: int, path: Path, offset: int, size: int) -> bool:
        """Cut off a torn tail: what a crash or power cut left from ``offset`` to the end of the
        last segment when it is zero octets (a file extended whose data never reached the
        disk), or the start of a frame cut short, or both.  Such records were never
        acknowledged (docs/vault.md, "What a crash can and cannot lose").  The octets are kept
        in ``<segment>.cut-<offset>`` beside it (fsynced) before the segment is truncated, and
        a warning is logged.  False (nothing done) for anything else: damage or tampering."""
        zeros = _zero_run_start(fd, offset, size)
        if zeros > offset:
            head = os.pread(fd, min(records.MAX_FRAME_LINE, zeros - offset), offset)
            if not _frame_prefix(head, offset, zeros - offset):
                return False
        cut, out = _new_file(path.with_name(f"{path.name}.cut-{offset}"))
        try:
            at = offset
            while chunk := os.pread(fd, min(_CHUNK, size - at), at) if at < size else b"":
                at += _write_all(out, chunk)
            os.fsync(out)
        finally:
            os.close(out)
        os.truncate(path, offset)
        fsync_file(path)
        fsync_dir(path.parent)
        log.warn(
            "vault segment {name}: a torn tail of {n} octets at offset {offset} (a crash before"
            " it was acknowledged) was cut off and kept in {cut}",
            name=path.name,
            n=size - offset,
            offset=offset,
            cut=cut.name,
        )
        return True


def _no_crash_point(name: str) -> None:
    """No crash point (all but the server's log)."""


#: Octets read at a time when a torn tail is checked or kept.
_CHUNK = 1 << 20


def _new_file(path: Path) -> tuple[Path, int]:
    """Create ``path``, or ``<path>-2``, ``-3``… when it exists (an earlier cut is never
    overwritten); the path and an fd open for writing."""
    candidate, n = path, 1
    while True:
        try:
            return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")


def _write_all(fd: int, data: bytes | memoryview) -> int:
    """Write all of ``data`` to ``fd``; its length."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def _zero_run_start(fd: int, offset: int, size: int) -> int:
    """Where the run of zero octets that ends the file begins (``size`` when the last octet is
    not zero), looking no further back than ``offset``."""
    end = size
    while end > offset:
        start = max(offset, end - _CHUNK)
        chunk = os.pread(fd, end - start, start)
        kept = chunk.rstrip(b"\0")
        if kept:
            return start + len(kept)
        end = start
    return offset


def _frame_prefix(head: bytes, offset: int, available: int) -> bool:
    """Whether ``head`` (the first octets of the ``available`` left at ``offset``) is the start
    of a record frame cut short, or of a segment header line cut short."""
    if offset == 0:
        return records.SEGMENT_MAGIC.startswith(head[: len(records.SEGMENT_MAGIC)]) and (
            b"\n" not in head
        )
    try:
        line = records.parse_frame_line(head, offset, available)
    except Truncated:
        return b"R ".startswith(head[:2])
    except FormatError:
        return False
    return line.frame_length > available


def _read_segment(path: Path) -> Iterator[Record]:
    with open(path, "rb") as f:
        data = f.read()
    header = records.parse_segment_header(data)
    offset = header.length
    while offset < len(data):
        record, offset = records.parse_frame(data, offset)
        yield record
