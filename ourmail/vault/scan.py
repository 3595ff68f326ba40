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
import re
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
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


#: How the canonical metadata (sorted keys) of a kind begins: a capture's first key is
#: ``body``; a blob has only the common and content fields, of which ``kind`` sorts first.
PREFIXES = {"capture": b'{"body":', "blob": b'{"kind":"blob",'}
#: ``seq`` is never a record's first key, and no nested object of a capture or blob has one.
_SEQ = re.compile(rb',"seq":(\d+)[,}]')
#: Read at once for a frame: its line and, for most records, the whole metadata.
_CHUNK = 4096


def entries(
    log: SegmentLog, after: int = 0, brief: AbstractSet[str] = frozenset()
) -> Iterator[Entry]:
    """Every record's metadata from seq ``after + 1`` on, in order (see the module text);
    segments wholly before it are skipped on their header alone.  Records of the kinds in
    ``brief`` (``capture``, ``blob``) come with only ``seq`` and ``kind`` in their fields:
    their metadata is not parsed (the pass that wants only rules and holds)."""
    prefixes = tuple((PREFIXES[k], k) for k in brief)
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
                entry, after_frame = _frame_at(fd, number, offset, size, prefixes)
                if entry is None:
                    if last:
                        break
                    raise FormatError(f"segment {number}: record cut short at offset {offset}")
                if entry.seq > after:
                    yield entry
                offset = after_frame


def frames(
    fd: int, number: int, offset: int, brief: AbstractSet[str] = frozenset()
) -> Iterator[tuple[Entry, int]]:
    """The records of segment ``number``, open as ``fd``, from the frame at ``offset`` on, each
    with the offset after it (``brief`` as for :func:`entries`); ends at the end of the file or
    at a frame cut short (one being written)."""
    prefixes = tuple((PREFIXES[k], k) for k in brief)
    size = os.fstat(fd).st_size
    while offset < size:
        entry, after = _frame_at(fd, number, offset, size, prefixes)
        if entry is None:
            return
        yield entry, after
        offset = after


def _first_seq(path: Path) -> int:
    with open(path, "rb") as f:
        return records.parse_segment_header(f.read(records.MAX_FRAME_LINE)).first_seq


def _frame_at(
    fd: int, number: int, offset: int, size: int, prefixes: tuple[tuple[bytes, str], ...]
) -> tuple[Entry | None, int]:
    head = os.pread(fd, _CHUNK, offset)
    end = head.find(b"\n", 0, records.MAX_FRAME_LINE)
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
    start = end + 1
    after = offset + start + meta_len + stored + 1
    if after > size:
        return None, size
    meta = head[start : start + meta_len]
    if len(meta) < meta_len:
        meta = os.pread(fd, meta_len, offset + start)
    digest = parts[1].decode("ascii")
    for prefix, kind in prefixes:
        if meta.startswith(prefix):
            found = _SEQ.search(meta)
            if found is None:
                raise FormatError(f"segment {number}: metadata at offset {offset} has no seq")
            brief = {"seq": int(found.group(1)), "kind": kind}
            return Entry(Position(number, offset), digest, brief, stored), after
    try:
        fields = json.loads(meta)
    except ValueError:
        raise FormatError(f"segment {number}: metadata at offset {offset} is not JSON") from None
    if not isinstance(fields, dict) or "seq" not in fields or "kind" not in fields:
        raise FormatError(f"segment {number}: metadata at offset {offset} is not a record's")
    return Entry(Position(number, offset), digest, fields, stored), after
