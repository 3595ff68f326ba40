"""SASL PLAIN decoding shared by SMTP, IMAP and POP3: any input gives a response or None."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from ourmail.auth.sasl import Plain, decode_base64, decode_plain


def test_plain_responses() -> None:
    line = base64.b64encode(b"\0alice\0secret")
    assert decode_plain(line) == Plain("", "alice", "secret")
    assert decode_plain(line.decode() + "\r") == Plain("", "alice", "secret")
    assert not decode_plain(line).for_someone_else  # type: ignore[union-attr]
    assert decode_plain(base64.b64encode(b"bob\0alice\0x")).for_someone_else  # type: ignore[union-attr]
    assert decode_plain(base64.b64encode(b"alice\0alice\0x")) == Plain("alice", "alice", "x")
    for bad in (b"=", b"", b"!!!", base64.b64encode(b"a\0b"), base64.b64encode(b"\xff\0a\0b")):
        assert decode_plain(bad) is None
    assert decode_base64("=") == ""


@given(st.binary(max_size=200))
def test_garbage_is_none_or_a_response(data: bytes) -> None:
    for line in (data, base64.b64encode(data)):
        assert decode_plain(line) is None or isinstance(decode_plain(line), Plain)
