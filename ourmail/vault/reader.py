"""Reading a segment frame by frame, with bounded memory (docs/vault-format.md).

:func:`ourmail.vault.segments.SegmentLog.records` reads a whole segment (256 MiB) at once,
which suits a catch-up of a few records; ``vault verify`` and ``vault export`` read every
segment, so they read each frame's line and metadata with ``pread`` and the content in
chunks (:meth:`SegmentFile.chunks`, :func:`plain_chunks`): memory stays at one metadata
(at most :data:`~ourmail.vault.records.MAX_META`) and one chunk, whatever the segment or a
hostile frame says.  Blocking: used in a thread or a command.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from ourmail.vault import records
from ourmail.vault.records import FormatError, SegmentHeader, Truncated

#: Octets read (or decompressed) at a time.
CHUNK = 1 << 20
#: Reads of frame lines, metadata and small contents are served from a window this large.
BUFFER = 256 * 1024


@attrs.frozen
class Frame:
    """One record's frame in a segment: its hash and metadata, and where its content is."""

    hash: str
    meta: bytes
    #: Where the frame starts in the segment.
    offset: int
    #: Where the (stored) content starts, and its length as stored.
    content_offset: int
    content_length: int

    @property
    def end(self) -> int:
        """The offset just after the frame (the next frame's)."""
        return self.content_offset + self.content_length + 1

    def fields(self) -> dict[str, Any]:
        """The metadata parsed (FormatError when it is not a JSON object)."""
        try:
            value = json.loads(self.meta)
        except ValueError as e:
            raise FormatError(f"its metadata is not JSON ({e})") from None
        if not isinstance(value, dict):
            raise FormatError("its metadata is not a JSON object")
        return value


class SegmentFile:
    """One segment file opened for reading (a context manager)."""

    def __init__(self, path: Path, fd: int | None = None) -> None:
        """Open ``path``, or take ``fd`` (a file of it already open) as its own."""
        self.path = path
        self._fd = os.open(path, os.O_RDONLY) if fd is None else fd
        self.size = os.fstat(self._fd).st_size
        self._window, self._window_at = b"", 0

    def twin(self) -> SegmentFile:
        """The same open file (the same inode, even once another file is renamed over its
        path) with a read window of its own, for reads away from this one's."""
        return SegmentFile(self.path, os.dup(self._fd))

    def __enter__(self) -> SegmentFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def header(self) -> SegmentHeader:
        """The segment's header line (FormatError when it has none)."""
        return records.parse_segment_header(self._read(records.MAX_FRAME_LINE, 0))

    def frame_at(self, offset: int) -> Frame:
        """The frame at ``offset``: Truncated when the file ends inside it, FormatError when
        there is no frame there.  Reads its line and metadata only."""
        line = self._read(records.MAX_FRAME_LINE, offset)
        end = line.find(b"\n")
        if end < 0:
            if self.size - offset < records.MAX_FRAME_LINE:
                raise Truncated(f"record frame cut short at offset {offset}")
            raise FormatError(f"no record frame at offset {offset}")
        parts = line[:end].split(b" ")
        if len(parts) != 4 or parts[0] != b"R":
            raise FormatError(f"no record frame at offset {offset}")
        try:
            digest = parts[1].decode("ascii")
            meta_len, content_len = int(parts[2]), int(parts[3])
        except ValueError as e:
            raise FormatError(f"bad record frame at offset {offset}: {e}") from None
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise FormatError(f"bad record frame at offset {offset}: its hash is not hex")
        if not (0 < meta_len <= records.MAX_META and 0 <= content_len <= records.MAX_CONTENT):
            raise FormatError(f"record frame at offset {offset} has impossible lengths")
        meta_at = offset + end + 1
        frame_end = meta_at + meta_len + content_len + 1
        if frame_end > self.size:
            raise Truncated(f"record at offset {offset} cut short")
        if self._read(1, frame_end - 1) != b"\n":
            raise FormatError(f"record at offset {offset} does not end where its frame says")
        meta = self._read(meta_len, meta_at)
        return Frame(digest, meta, offset, meta_at + meta_len, content_len)

    def frames(self, offset: int) -> Iterator[Frame]:
        """Every frame from ``offset`` to the end of the file (raising where one does not
        parse)."""
        while offset < self.size:
            frame = self.frame_at(offset)
            yield frame
            offset = frame.end

    def resync(self, offset: int) -> Frame | None:
        """The first whole frame after ``offset`` whose hash is its metadata's (a frame
        that only looks like one is passed over), reading a chunk at a time; None when
        there is none before the end of the file."""
        at = offset + 1
        while at < self.size:
            data = self._read(CHUNK + 2, at)
            found = data.find(b"\nR ")
            while 0 <= found < CHUNK:
                candidate = at + found + 1
                try:
                    frame = self.frame_at(candidate)
                    fields = frame.fields()
                    if records.chain_hash(str(fields["prev"]), frame.meta) == frame.hash:
                        return frame
                except (FormatError, KeyError, ValueError, TypeError):
                    pass
                found = data.find(b"\nR ", found + 1)
            at += CHUNK
        return None

    def chunks(self, frame: Frame) -> Iterator[bytes]:
        """The frame's content as stored, in chunks of at most :data:`CHUNK`."""
        at, left = frame.content_offset, frame.content_length
        while left > 0:
            data = self._read(min(CHUNK, left), at)
            if not data:
                raise Truncated(f"record at offset {frame.offset} cut short")
            at, left = at + len(data), left - len(data)
            yield data

    def content(self, frame: Frame) -> bytes:
        """The frame's content as stored, whole (for a message, whose size is bounded)."""
        return b"".join(self.chunks(frame))

    def _read(self, length: int, offset: int) -> bytes:
        """``length`` octets at ``offset``: small reads come from one :data:`BUFFER`-sized
        window read ahead (frames are read in order), larger ones straight from the file."""
        if length > BUFFER:
            return os.pread(self._fd, length, offset)
        start = offset - self._window_at
        if start < 0 or start + length > len(self._window):
            self._window, self._window_at, start = os.pread(self._fd, BUFFER, offset), offset, 0
        return self._window[start : start + length]


def plain_chunks(stored: Iterator[bytes], compressed: bool) -> Iterator[bytes]:
    """The content uncompressed, in chunks of at most :data:`CHUNK` (zlib.error when the
    stored content does not decompress, or has data after its end)."""
    if not compressed:
        yield from stored
        return
    inflate = zlib.decompressobj()
    for data in stored:
        while data:
            out = inflate.decompress(data, CHUNK)
            data = inflate.unconsumed_tail
            if out:
                yield out
            if inflate.eof:
                break
        if inflate.eof and (data or inflate.unused_data):
            raise zlib.error("data after the end of the compressed content")
    while not inflate.eof:
        out = inflate.decompress(b"", CHUNK)
        if not out:
            raise zlib.error("the compressed content is cut short")
        yield out
    if inflate.unused_data:
        raise zlib.error("data after the end of the compressed content")
