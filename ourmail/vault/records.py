"""The vault's record format: framing, metadata and the hash chain (docs/vault-format.md).

A segment file is one header line and then records, each framed as::

    R <record hash hex> <meta length> <content length>\\n<meta><content>\\n

``meta`` is canonical JSON (sorted keys, no spaces, UTF-8) holding at least ``seq``, ``prev``
(the previous record's hash, hex), ``kind`` and ``time``; a record with content also holds
``sha256`` and ``length`` of the content *uncompressed*, and ``zlib`` when it is compressed.

The record hash is ``sha256(bytes.fromhex(prev) + meta)``: the chain covers every record's
metadata, and through ``sha256`` its content, so content can later be removed (expiry) without
breaking the chain, while any changed, removed or reordered record breaks it.

This module knows no files, locks or threads; it only turns records into bytes and back, so
that ``vault verify``, the index and an auditor's script (docs/vault-verify.py) all read the
same definition.  Everything here follows only Python's standard library.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from typing import Any, cast

import attrs

#: The first line of every segment: ``OURMAIL-VAULT 1 <segment> <first seq> <prev hex>``.
SEGMENT_MAGIC = b"OURMAIL-VAULT"
FORMAT_VERSION = 1
#: The hash before the first record of a vault.
GENESIS = "0" * 64
#: Longest metadata a reader accepts (a hostile or broken file cannot make it allocate more).
MAX_META = 1 << 20
#: Longest content a reader accepts (a message is at most the largest SMTP size, compressed).
MAX_CONTENT = 1 << 31
#: Longest frame header line.
MAX_FRAME_LINE = 200
#: zlib level: measured as the best intake-to-size trade for mail (docs/performance.md).
ZLIB_LEVEL = 6

#: Kinds of record.  ``blob``: a message body, stored once however many messages share it;
#: ``capture``: one message's header section, envelope and the body blob's hash; ``expire``:
#: records whose content retention removed; ``hold``, ``release``: legal holds set and lifted;
#: ``rule``: a retention rule set; ``audit``: a search, export or restore by an admin;
#: ``notice``: something the vault itself records (a gap found after a crash).
KINDS = frozenset({"blob", "capture", "expire", "hold", "release", "rule", "audit", "notice"})


class FormatError(ValueError):
    """Bytes that are not a well-formed record or segment header."""


def canonical(meta: Mapping[str, Any]) -> bytes:
    """The one byte form of a record's metadata that its hash covers."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev: str, meta: bytes) -> str:
    """The record hash: sha256 of the previous record's hash (32 octets) and the metadata."""
    return hashlib.sha256(bytes.fromhex(prev) + meta).hexdigest()


@attrs.frozen
class Record:
    """One record as read from a segment (or about to be written).

    ``content`` is as stored (compressed when ``meta["zlib"]``), empty when the record has none
    or when expiry removed it; ``offset`` is where its frame starts in the segment."""

    hash: str
    meta: bytes
    content: bytes = b""
    offset: int = 0

    @property
    def fields(self) -> dict[str, Any]:
        value = json.loads(self.meta)
        if not isinstance(value, dict):
            raise FormatError("record metadata is not a JSON object")
        return value

    @property
    def seq(self) -> int:
        return int(self.fields["seq"])

    def frame(self) -> bytes:
        """The record's bytes in a segment."""
        head = b"R %s %d %d\n" % (self.hash.encode(), len(self.meta), len(self.content))
        return head + self.meta + self.content + b"\n"

    def plain(self) -> bytes:
        """The content uncompressed (empty when there is none or it was removed)."""
        if not self.content:
            return b""
        return zlib.decompress(self.content) if self.fields.get("zlib") else self.content


@attrs.frozen
class Content:
    """A record's content made ready to store (:func:`prepare`): what is written, and the
    ``sha256`` and ``length`` of the content uncompressed that the metadata names."""

    stored: bytes
    sha256: str
    length: int
    compressed: bool


def prepare(content: bytes | memoryview, compress: bool = True) -> Content:
    """Hash and (unless empty or ``compress`` is false) compress ``content``: the costly part
    of :func:`make`, done before the caller takes the vault's append lock."""
    digest = hashlib.sha256(content).hexdigest()
    if not (compress and content):
        return Content(bytes(content), digest, len(content), False)
    # In steps into one buffer: zlib.compress would hold its output twice at the end.
    compressor = zlib.compressobj(ZLIB_LEVEL)
    stored = bytearray()
    with memoryview(content) as view:
        for at in range(0, len(view), _STEP):
            stored += compressor.compress(view[at : at + _STEP])
    stored += compressor.flush()
    # A bytearray stands in for bytes (a copy would double the memory): never changed.
    return Content(cast(bytes, stored), digest, len(content), True)


#: Octets compressed at a time by :func:`prepare`.
_STEP = 1 << 20


def make(
    seq: int,
    prev: str,
    kind: str,
    time: float,
    fields: Mapping[str, Any],
    content: bytes | Content | None = None,
    compress: bool = True,
) -> Record:
    """A new record chained after ``prev``, with ``content`` (uncompressed, or as
    :func:`prepare` made it) if any."""
    if kind not in KINDS:
        raise ValueError(f"unknown vault record kind {kind!r}")
    meta: dict[str, Any] = dict(fields)
    meta.update(seq=seq, prev=prev, kind=kind, time=round(time, 3))
    stored = b""
    if content is not None:
        ready = content if isinstance(content, Content) else prepare(content, compress)
        meta["sha256"] = ready.sha256
        meta["length"] = ready.length
        if ready.compressed:
            meta["zlib"] = True
        stored = ready.stored
    body = canonical(meta)
    return Record(chain_hash(prev, body), body, stored)


def segment_header(number: int, first_seq: int, prev: str) -> bytes:
    """The first line of segment ``number``, whose first record is ``first_seq``."""
    return b"%s %d %d %d %s\n" % (SEGMENT_MAGIC, FORMAT_VERSION, number, first_seq, prev.encode())


@attrs.frozen
class SegmentHeader:
    number: int
    first_seq: int
    prev: str
    length: int


def parse_segment_header(data: bytes) -> SegmentHeader:
    """The header at the start of ``data`` (FormatError when it is not one)."""
    end = data.find(b"\n", 0, MAX_FRAME_LINE)
    if end < 0:
        raise FormatError("no segment header line")
    parts = data[:end].split(b" ")
    if len(parts) != 5 or parts[0] != SEGMENT_MAGIC:
        raise FormatError("not an ourmail vault segment")
    if parts[1] != str(FORMAT_VERSION).encode():
        raise FormatError(f"unknown segment format version {parts[1].decode(errors='replace')}")
    try:
        return SegmentHeader(int(parts[2]), int(parts[3]), _hex(parts[4]), end + 1)
    except ValueError as e:
        raise FormatError(f"bad segment header: {e}") from None


def _hex(value: bytes) -> str:
    text = value.decode("ascii")
    if len(text) != 64 or text.strip("0123456789abcdef"):
        raise ValueError("not a sha256 in hex")
    return text


class Truncated(FormatError):
    """The data ends inside a record frame (a crash mid-write, or a cut file)."""


@attrs.frozen
class FrameLine:
    """The first line of a record frame: the record's hash and its parts' lengths."""

    hash: str
    meta_length: int
    content_length: int
    #: Octets of the line itself, its newline included.
    length: int

    @property
    def frame_length(self) -> int:
        """Octets of the whole frame."""
        return self.length + self.meta_length + self.content_length + 1


def parse_frame_line(head: bytes | memoryview, offset: int, available: int) -> FrameLine:
    """The frame line at the start of ``head`` (the first MAX_FRAME_LINE octets, or fewer, of a
    frame at ``offset`` of data that has ``available`` octets from there on).  Truncated when
    the data ends inside the line; FormatError when it is not a frame line."""
    line_end = bytes(head[:MAX_FRAME_LINE]).find(b"\n")
    if line_end < 0:
        if available < MAX_FRAME_LINE:
            raise Truncated(f"record frame cut short at offset {offset}")
        raise FormatError(f"no record frame at offset {offset}")
    parts = bytes(head[:line_end]).split(b" ")
    if len(parts) != 4 or parts[0] != b"R":
        raise FormatError(f"no record frame at offset {offset}")
    try:
        digest = _hex(parts[1])
        meta_len, content_len = int(parts[2]), int(parts[3])
    except ValueError as e:
        raise FormatError(f"bad record frame at offset {offset}: {e}") from None
    if not (0 < meta_len <= MAX_META and 0 <= content_len <= MAX_CONTENT):
        raise FormatError(f"record frame at offset {offset} has impossible lengths")
    return FrameLine(digest, meta_len, content_len, line_end + 1)


def parse_frame(data: bytes | memoryview, offset: int) -> tuple[Record, int]:
    """The record framed at ``offset`` of ``data`` and the offset after it.  Truncated when the
    frame runs past the end; FormatError when it is not a frame."""
    view = memoryview(data)
    line = parse_frame_line(view[offset : offset + MAX_FRAME_LINE], offset, len(view) - offset)
    start = offset + line.length
    end = start + line.meta_length + line.content_length
    if end + 1 > len(view):
        raise Truncated(f"record at offset {offset} cut short")
    if view[end] != 0x0A:
        raise FormatError(f"record at offset {offset} does not end where its frame says")
    meta = bytes(view[start : start + line.meta_length])
    content = bytes(view[start + line.meta_length : end])
    return Record(line.hash, meta, content, offset), end + 1
