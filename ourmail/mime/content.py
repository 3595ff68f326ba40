"""Content windows: byte ranges of a message, decoded body parts and partial windows of them.

A large message is a memory map of its file (:meth:`IStoredMessage.buffer`), and its content
is read in ``CHUNK``-sized pieces, so a protocol sends a 50 MB body (IMAP BODY[] or BINARY[],
POP3 RETR or TOP) without ever making one 50 MB bytes object.  Base64 and quoted-printable are
decoded chunk by chunk (RFC 2045 §6); the decoded size is one decoding pass that keeps nothing.
The protocols' wire syntax (IMAP literals, POP3 dot-stuffing) is theirs, not this module's.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from typing import Protocol

import attrs

from ourmail.mime.structure import Buffer

CHUNK = 64 * 1024
#: Content at least this long is streamed to a client instead of built in memory.
STREAM_AT = 256 * 1024

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(b for b in range(256) if b not in _B64)
#: RFC 2045 §6.1 identity encodings.
_IDENTITY = {"", "7bit", "8bit", "binary"}


class UnknownCTE(Exception):
    """RFC 3516 §4.3: a Content-Transfer-Encoding the server cannot decode."""


class Content(Protocol):
    """Bytes of known size that can be read in chunks, more than once."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


@attrs.frozen
class Span:
    """``buf[start:end]`` of a message buffer."""

    buf: Buffer
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def chunks(self) -> Iterator[bytes]:
        for a in range(self.start, self.end, CHUNK):
            yield bytes(self.buf[a : min(a + CHUNK, self.end)])


@attrs.frozen
class Whole:
    """Bytes built in memory (a HEADER.FIELDS section)."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self) -> Iterator[bytes]:
        yield self.data


@attrs.define
class Decoded:
    """A body part's content with its transfer encoding undone (RFC 2045 §6)."""

    raw: Span
    encoding: str
    _size: int | None = None

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = sum(len(c) for c in self.chunks())
        return self._size

    def chunks(self) -> Iterator[bytes]:
        if self.encoding == "base64":
            return _base64(self.raw)
        return _quoted_printable(self.raw)


@attrs.frozen
class Window:
    """RFC 3501 §6.4.5 partial fetch: ``count`` octets of ``content`` from ``offset``."""

    content: Content
    offset: int
    count: int

    @property
    def size(self) -> int:
        return max(0, min(self.count, self.content.size - self.offset))

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.content, Span):
            start = min(self.content.start + self.offset, self.content.end)
            yield from Span(self.content.buf, start, start + self.size).chunks()
            return
        skip, left = self.offset, self.size
        for chunk in self.content.chunks():
            if left <= 0:
                return
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            piece = chunk[skip : skip + left]
            skip = 0
            left -= len(piece)
            yield piece


def decoded(raw: Span, cte: str | None) -> Content:
    """A part's body decoded per its Content-Transfer-Encoding; UnknownCTE if we cannot."""
    encoding = (cte or "").strip().lower()
    if encoding in _IDENTITY:
        return raw
    if encoding in ("base64", "quoted-printable"):
        return Decoded(raw, encoding)
    raise UnknownCTE(encoding)


def _base64(raw: Span) -> Iterator[bytes]:
    # Lenient, as mail readers are: characters outside the alphabet are skipped, and a last
    # group of 2 or 3 characters is completed with padding.
    held = b""
    for chunk in raw.chunks():
        held += chunk.translate(None, _NOT_B64)
        cut = len(held) // 4 * 4
        if cut:
            yield _b64_group(held[:cut])
            held = held[cut:]
    if len(held.rstrip(b"=")) >= 2:
        yield _b64_group(held.rstrip(b"=") + b"=" * (-len(held.rstrip(b"=")) % 4))


def _b64_group(text: bytes) -> bytes:
    try:
        return binascii.a2b_base64(text)
    except binascii.Error:
        return b""


_QP_TAIL = re.compile(rb"=[0-9A-Fa-f]?$")


def _quoted_printable(raw: Span) -> Iterator[bytes]:
    # Decoded line by line so a soft line break or an =XX escape is never cut in two.
    held = b""
    for chunk in raw.chunks():
        held += chunk
        cut = held.rfind(b"\r\n") + 2
        if cut < 2:
            tail = _QP_TAIL.search(held)
            cut = tail.start() if tail else len(held)
        yield binascii.a2b_qp(held[:cut])
        held = held[cut:]
    if held:
        yield binascii.a2b_qp(held)


def contains(buf: Buffer, start: int, end: int, needle: bytes) -> bool:
    """Whether ``buf[start:end]`` holds ``needle`` (lower-case), ignoring ASCII case
    (RFC 3501 §6.4.4), read in chunks that overlap by ``len(needle) - 1``."""
    if not needle:
        return True
    step = max(CHUNK, len(needle))
    pos = start
    while pos < end:
        window = bytes(buf[pos : min(end, pos + step + len(needle) - 1)])
        if needle in window.lower():
            return True
        pos += step
    return False
