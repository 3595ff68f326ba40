"""COMPRESS=DEFLATE (RFC 4978)."""

from __future__ import annotations

import zlib

from conftest import RunningServer
from imaphelp import Session, deliver


def test_compressed_session(mailserver: RunningServer) -> None:
    deliver(mailserver, 20)
    s = Session(mailserver)
    assert b" BAD " in s.cmd("COMPRESS GZIP")[-1]
    assert s.cmd("COMPRESS DEFLATE")[-1].endswith(b"OK DEFLATE active")
    s.raw.start_deflate()
    s.ok("SELECT INBOX")
    fetched = s.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert sum(b" FETCH (" in x for x in fetched) == 20
    assert b"NO [COMPRESSIONACTIVE]" in s.cmd("COMPRESS DEFLATE")[-1]
    # Pipelined commands arrive in one compressed write and are answered in order.
    s.raw.send(b"p1 NOOP\r\np2 SEARCH SUBJECT 7\r\np3 NOOP\r\n")
    lines = s.raw.until(b"p3 ")
    assert lines[0] == b"p1 OK NOOP completed" and lines[1] == b"* SEARCH 8 18"
    s.close()


def test_compressed_garbage_closes_the_connection(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.cmd("COMPRESS DEFLATE")
    s.raw.sock.sendall(b"\xff" * 64)  # not deflate data
    inflate = zlib.decompressobj(-15)
    data = b""
    try:
        while chunk := s.raw.sock.recv(65536):
            data += inflate.decompress(chunk)
    except OSError:
        pass
    assert b"* BYE Corrupt compressed data" in data
    s.close()


def test_a_compressed_bomb_is_read_in_bounded_steps(mailserver: RunningServer) -> None:
    """A megabyte line squeezed into a few hundred bytes gets "line too long", no more."""
    s = Session(mailserver)
    s.cmd("COMPRESS DEFLATE")
    s.raw.start_deflate()
    s.raw.send(b"x" * (4 << 20) + b"\r\nz NOOP\r\n")
    lines = s.raw.until(b"z ")
    assert b"* BAD Command line too long" in lines and lines[-1] == b"z OK NOOP completed"
    s.close()
