"""A raw line client for tests that speak a protocol by hand (bad input, pipelining, IDLE)."""

from __future__ import annotations

import socket
import ssl
import zlib

from conftest import client_tls


class RawClient:
    """``port`` on 127.0.0.1 (from the loopback address ``source``, if given), or the unix
    socket at path ``unix``."""

    def __init__(
        self,
        port: int = 0,
        tls: bool = False,
        timeout: float = 10.0,
        unix: str | None = None,
        source: str | None = None,
    ) -> None:
        if unix is not None:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(unix)
        else:
            origin = None if source is None else (source, 0)
            sock = socket.create_connection(("127.0.0.1", port), timeout, origin)
        self.sock: socket.socket | ssl.SSLSocket = client_tls().wrap_socket(sock) if tls else sock
        self.buf = b""
        self._deflate: zlib._Compress | None = None
        self._inflate: zlib._Decompress | None = None

    def start_deflate(self) -> None:
        """From now on both directions are raw deflate (IMAP COMPRESS, RFC 4978)."""
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)
        if self.buf:
            self.buf = self._inflate.decompress(self.buf)

    def send(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(self.buf)
        return self._inflate.decompress(chunk) if self._inflate is not None else chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self.buf += self._recv()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def until(self, prefix: bytes) -> list[bytes]:
        """Lines up to and including the first that starts with ``prefix``."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(prefix):
                return lines

    def starttls(self) -> None:
        assert not self.buf, "plaintext left over before the TLS handshake"
        self.sock = client_tls().wrap_socket(self.sock)

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()
