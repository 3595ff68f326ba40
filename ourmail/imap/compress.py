"""IMAP COMPRESS=DEFLATE (RFC 4978): raw deflate in both directions after ``COMPRESS DEFLATE``.

* The tagged OK goes out uncompressed; every byte after it, both ways, is deflated.  Input the
  client pipelined after the command is already compressed and is inflated with the rest.
* Memory stays bounded: input is inflated at most ``CHUNK`` bytes at a time and only while
  commands are being processed; while a command waits (a pause), compressed input waits too and
  the transport is paused, so a small "zip bomb" cannot grow any buffer.
* Each write is flushed with ``Z_SYNC_FLUSH`` so the client can decode every response at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from ourmail.imap.states import AUTHED
from ourmail.imap.wire import Atom, ParseError, Token

#: Most inflated bytes handed to the line protocol at once.
CHUNK = 64 * 1024


class CompressCommand:
    """COMPRESS (a mixin of :class:`~ourmail.imap.server.IMAPServer`, before LineProtocol)."""

    _deflate: Any = None
    _inflate: Any = None
    _zin = b""

    def do_COMPRESS(self, args: list[Token]) -> None:
        if len(args) != 1 or not isinstance(args[0], Atom) or args[0].upper() != "DEFLATE":
            raise ParseError("COMPRESS takes DEFLATE")
        if self._deflate is not None:
            self.send(f"{self._tag} NO [COMPRESSIONACTIVE] DEFLATE is already active")
            return
        self.tagged("OK", "DEFLATE active")
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw deflate, RFC 1951
        self._inflate = zlib.decompressobj(-15)
        self._zin, pipelined = b"", bytes(self._buf)
        self._buf.clear()
        if pipelined:
            self._zin = pipelined
            self._pump()

    def write(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        super().write(data)  # type: ignore[misc]

    def dataReceived(self, data: bytes) -> None:
        if self._inflate is None:
            super().dataReceived(data)  # type: ignore[misc]
            return
        self.resetTimeout()
        self._zin += data
        if self._paused:
            self._pause_transport()
            return
        self._pump()

    def resume(self) -> None:
        super().resume()  # type: ignore[misc]
        if self._zin and not self._paused and self._inflate is not None:
            self._pump()

    def _pump(self) -> None:
        data, self._zin = self._zin, b""
        while data and not self.closing:
            try:
                out = self._inflate.decompress(data, CHUNK)
            except zlib.error:
                self.send("* BYE Corrupt compressed data")
                self.close()
                return
            data = self._inflate.unconsumed_tail
            if out:
                super().dataReceived(out)  # type: ignore[misc]
            if self._paused:
                self._zin = data
                return

    COMMANDS: dict[str, tuple[Callable[..., Any], frozenset[str]]] = {
        "COMPRESS": (do_COMPRESS, AUTHED),
    }
