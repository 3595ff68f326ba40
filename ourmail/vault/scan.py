"""Reading the vault's record metadata without its content (docs/vault-format.md).

Retention decides over every record of the vault, but needs only their ``meta``: this module
walks the segments frame by frame with ``pread`` (the frame line, then the metadata, then a
jump over the content), so a pass over a vault costs two small reads per record whatever the
size of the messages.  Content is read only for the records a caller asks about
(:meth:`ourmail.vault.segments.SegmentLog.read_at`).

A frame cut short at the end of the last segment (a crash mid-write, never acknowledged) ends
the walk; anything else that does not parse raises :class:`~ourmail.vault.records.FormatError`
(``ourmail vault verify`` says what is wrong).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ourmail.vault import records
from ourmail.vault.records import FormatError
from ourmail.vault.segments import Position, SegmentLog


@attrs.frozen
class Entry:
    """One record's metadata and where it is."""

    position: Position
    hash: str
    fields: dict[str, Any]
    #: The stored (possibly compressed) content's length: 0 once expiry removed it.
    stored: int

    @property
    def seq(self) -> int:
        return int(self.fields["seq"])

    @property
    def kind(self) -> str:
        return str(self.fields["kind"])


def entries(log: SegmentLog, after: int = 0) -> Iterator[Entry]:
    """Every record's metadata from seq ``after + 1`` on, in order (see the module text);
    segments wholly before it are skipped on their header alone."""
    segments = log.segments()
    firsts = [_first_seq(path) for _, path in segments]
    for index, (number, path) in enumerate(segments):
        last = index == len(segments) - 1
        if not last and firsts[index + 1] <= after + 1:
            continue
        with open(path, "rb") as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            offset = records.parse_segment_header(os.pread(fd, records.MAX_FRAME_LINE, 0)).length
            while offset < size:
                entry, after_frame = _frame_at(fd, number, offset, size)
                if entry is None:
                    if last:
                        break
                    raise FormatError(f"segment {number}: record cut short at offset {offset}")
                if entry.seq > after:
                    yield entry
                offset = after_frame


def _first_seq(path: Path) -> int:
    with open(path, "rb") as f:
        return records.parse_segment_header(f.read(records.MAX_FRAME_LINE)).first_seq


def _frame_at(fd: int, number: int, offset: int, size: int) -> tuple[Entry | None, int]:
    head = os.pread(fd, records.MAX_FRAME_LINE, offset)
    end = head.find(b"\n")
    if end < 0:
        if size - offset < records.MAX_FRAME_LINE:
            return None, size
        raise FormatError(f"segment {number}: no record frame at offset {offset}")
    parts = head[:end].split(b" ")
    if len(parts) != 4 or parts[0] != b"R" or len(parts[1]) != 64:
        raise FormatError(f"segment {number}: no record frame at offset {offset}")
    try:
        meta_len, stored = int(parts[2]), int(parts[3])
    except ValueError:
        raise FormatError(f"segment {number}: bad record frame at offset {offset}") from None
    if not (0 < meta_len <= records.MAX_META and 0 <= stored <= records.MAX_CONTENT):
        raise FormatError(f"segment {number}: impossible lengths at offset {offset}")
    start = offset + end + 1
    after = start + meta_len + stored + 1
    if after > size:
        return None, size
    try:
        fields = json.loads(os.pread(fd, meta_len, start))
    except ValueError:
        raise FormatError(f"segment {number}: metadata at offset {offset} is not JSON") from None
    if not isinstance(fields, dict) or "seq" not in fields or "kind" not in fields:
        raise FormatError(f"segment {number}: metadata at offset {offset} is not a record's")
    return Entry(Position(number, offset), parts[1].decode("ascii"), fields, stored), after
