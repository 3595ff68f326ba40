"""Message framing: the bytes after ``DATA`` (RFC 5321 §4.1.1.4) and ``BDAT`` (RFC 3030).

Implementation notes (keep these true when changing this module):

* The end of DATA is ``CRLF . CRLF`` and nothing else: a bare LF before or after the dot never
  ends the message (SMTP smuggling).  Bare CR and LF inside the message are stored as CRLF.
* Memory is bounded: at most one line (capped at :data:`HOLD`) is held while looking for the
  end; the rest is streamed to the spool.  Beyond ``max_message_size`` nothing more is written,
  and the session refuses the message when it ends (RFC 1870 §6.2).
* BDAT chunks are exactly as long as announced and are not dot-stuffed; a CR that ends one
  chunk may pair with an LF that starts the next (RFC 3030 §3).

A reader is fed what arrives in raw mode and returns None until its frame ends, then the bytes
that follow the frame (pipelined commands) for the session to read as lines.
"""

from __future__ import annotations

from ourmail.mime.structure import to_crlf
from ourmail.smtp.spool import Spool

#: Longest line kept in memory while looking for the end of DATA (longer ones are streamed).
HOLD = 1 << 20


class MessageSink:
    """The message being received: counted, and written to its spool up to ``limit`` bytes."""

    def __init__(self, spool: Spool, limit: int) -> None:
        self.spool = spool
        self.limit = limit
        self.size = 0
        self.too_big = False

    def write(self, part: bytes) -> None:
        self.size += len(part)
        if self.size > self.limit:
            self.too_big = True
        else:
            self.spool.write(part)


class DotReader:
    """The text after ``DATA``: dot-unstuffed (RFC 5321 §4.5.2), ends at ``CRLF.CRLF``."""

    def __init__(self, sink: MessageSink) -> None:
        self.sink = sink
        self._buf = b"\r\n"
        self._first = True

    def feed(self, chunk: bytes) -> bytes | None:
        """Take received bytes; at the end of the message, the bytes after it."""
        buf = self._buf + chunk
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self._emit(buf[: end + 2])
            self._buf = b""
            return buf[end + 5 :]
        cut = buf.rfind(b"\r\n")
        if cut <= 0:
            if len(buf) < HOLD:
                self._buf = buf
                return None
            cut = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        self._emit(buf[:cut])
        self._buf = buf[cut:]
        return None

    def _emit(self, part: bytes) -> None:
        """Write DATA bytes: dot-unstuffed, CRLF-normalised."""
        part = to_crlf(part.replace(b"\r\n..", b"\r\n."))
        if self._first:
            part, self._first = part[2:], False
        self.sink.write(part)


class ChunkReader:
    """The chunks of one BDAT transaction; without a sink, a chunk read and thrown away
    (RFC 3030 §2: the octets of a refused BDAT are still read)."""

    def __init__(self, sink: MessageSink | None = None) -> None:
        self.sink = sink
        self._left = 0
        self._cr_pending = False

    def expect(self, size: int) -> None:
        """The next ``size`` bytes are the next chunk."""
        self._left = size

    def feed(self, data: bytes) -> bytes | None:
        """Take received bytes; at the end of the chunk, the bytes after it."""
        take, rest = data[: self._left], data[self._left :]
        self._left -= len(take)
        if self.sink is not None:
            self._emit(take)
        return None if self._left else rest

    def _emit(self, part: bytes) -> None:
        assert self.sink is not None
        if self._cr_pending:
            part, self._cr_pending = b"\r" + part, False
        if part.endswith(b"\r"):
            part, self._cr_pending = part[:-1], True
        self.sink.write(to_crlf(part))

    def end(self) -> None:
        """After the LAST chunk: a CR left waiting ends the message as a line end."""
        if self._cr_pending and self.sink is not None:
            self._cr_pending = False
            self.sink.write(b"\r\n")
