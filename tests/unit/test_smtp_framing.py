"""DATA and BDAT framing (smtp/data.py) and the AUTH exchange (smtp/auth.py), without a socket."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ourmail.smtp import auth
from ourmail.smtp.data import HOLD, ChunkReader, DotReader, MessageSink
from ourmail.smtp.spool import Spool


def sink(tmp_path: Path, limit: int = 1 << 20) -> MessageSink:
    return MessageSink(Spool(tmp_path, "m"), limit)


def feed_all(reader: DotReader | ChunkReader, *chunks: bytes) -> bytes | None:
    rest = None
    for chunk in chunks:
        rest = reader.feed(chunk)
    return rest


def test_data_ends_only_at_crlf_dot_crlf(tmp_path: Path) -> None:
    s = sink(tmp_path)
    reader = DotReader(s)
    # RFC 5321 §4.5.2: dot-unstuffing; a bare LF before the dot does not end the message.
    assert reader.feed(b"a\r\n..b\n.\nc\r") is None
    assert feed_all(reader, b"\n.", b"\r\nQUIT\r\n") == b"QUIT\r\n"
    assert s.spool.source() == b"a\r\n.b\r\n.\r\nc\r\n"


def test_data_streams_a_long_line(tmp_path: Path) -> None:
    s = sink(tmp_path, limit=4 * HOLD)
    reader = DotReader(s)
    assert reader.feed(b"x" * (HOLD + 10)) is None
    assert s.size >= HOLD  # written, not held
    assert reader.feed(b"\r\n.\r\n") == b""


def test_size_limit(tmp_path: Path) -> None:
    s = sink(tmp_path, limit=5)
    assert DotReader(s).feed(b"123456\r\n.\r\n") == b""
    assert s.too_big and s.spool.size == 0


def test_bdat_chunks_pair_cr_lf(tmp_path: Path) -> None:
    s = sink(tmp_path)
    chunks = ChunkReader(s)
    chunks.expect(2)
    assert chunks.feed(b"a\r") == b""  # the CR waits for the next chunk
    assert s.spool.source() == b"a"
    chunks.expect(3)
    assert chunks.feed(b"\nb\rMAIL") == b"MAIL"  # RFC 3030 §3: CR LF across chunks
    chunks.end()
    assert s.spool.source() == b"a\r\nb\r\n"


def test_bdat_skip_reads_and_discards() -> None:
    skip = ChunkReader()
    skip.expect(5)
    assert skip.feed(b"12") is None
    assert skip.feed(b"345RSET\r\n") == b"RSET\r\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_plain() -> None:
    assert auth.SASLExchange().start("plain", b64("\0u\0p")) == auth.Credentials("u", "p")
    ex = auth.SASLExchange()
    assert ex.start("PLAIN", "") == auth.Challenge("")
    assert ex.respond(b64("u\0u\0p")) == auth.Credentials("u", "p")
    assert auth.SASLExchange().start("PLAIN", b64("other\0u\0p")).code == 535  # type: ignore[union-attr]
    assert auth.SASLExchange().start("PLAIN", "!!").code == 501  # type: ignore[union-attr]


def test_auth_login_and_cancel() -> None:
    ex = auth.SASLExchange()
    assert ex.start("LOGIN", "") == auth.Challenge("VXNlcm5hbWU6")
    assert ex.respond(b64("u")) == auth.Challenge("UGFzc3dvcmQ6")
    assert ex.respond(b64("p")) == auth.Credentials("u", "p")
    ex = auth.SASLExchange()
    ex.start("PLAIN", "")
    assert ex.respond("*") == auth.Failed(501, "5.7.0 Authentication cancelled")


@pytest.mark.parametrize("mechanism", ["CRAM-MD5", "XOAUTH2", ""])
def test_auth_unknown_mechanism(mechanism: str) -> None:
    assert auth.SASLExchange().start(mechanism, "").code == 504  # type: ignore[union-attr]
