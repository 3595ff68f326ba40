"""Chunked decoding for BINARY (RFC 3516): the same bytes whatever the chunk size."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ourmail.imap import literal
from ourmail.mime import content


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(content, "CHUNK", 7)  # every boundary case in a few bytes


def _span(data: bytes) -> content.Span:
    return content.Span(data, 0, len(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_base64_round_trip(data: bytes) -> None:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    out = content.decoded(_span(encoded), "Base64")
    assert b"".join(out.chunks()) == data
    assert out.size == len(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_quoted_printable_round_trip(data: bytes) -> None:
    encoded = binascii.b2a_qp(data, istext=False)
    out = content.decoded(_span(encoded), "quoted-printable")
    assert b"".join(out.chunks()) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["base64", "quoted-printable"]))
def test_garbage_never_raises(data: bytes, cte: str) -> None:
    out = content.decoded(_span(data), cte)
    assert out.size == len(b"".join(out.chunks()))


@given(st.binary(max_size=100), st.integers(0, 120), st.integers(0, 120))
def test_window_of_decoded_and_raw(data: bytes, offset: int, count: int) -> None:
    encoded = base64.b64encode(data)
    for inner in (content.decoded(_span(encoded), "base64"), _span(data)):
        window = content.Window(inner, offset, count)
        assert b"".join(window.chunks()) == data[offset : offset + count]
        assert window.size == len(data[offset : offset + count])


def test_unknown_encoding() -> None:
    with pytest.raises(content.UnknownCTE):
        content.decoded(_span(b"x"), "x-uuencode")
    assert content.decoded(_span(b"x"), " 8BIT ") == _span(b"x")


def test_small_literals_are_built_and_large_ones_streamed() -> None:
    assert literal.literal_pieces(content.Whole(b"a\x00b"), binary=True) == [b"~{3}\r\na\x00b"]
    assert literal.literal_pieces(content.Whole(b"ab")) == [b"{2}\r\nab"]
    big = _span(b"x" * content.STREAM_AT)
    assert literal.literal_pieces(big, binary=True) == [b"~{%d}\r\n" % content.STREAM_AT, big]


def test_plain_literals_carry_no_nul() -> None:
    # RFC 3501 §9 CHAR8: NUL becomes 0x80 octet for octet, small or streamed.
    assert literal.literal_pieces(content.Whole(b"a\x00b")) == [b"{3}\r\na\x80b"]
    data = b"x\x00" * content.STREAM_AT
    head, streamed = literal.literal_pieces(_span(data))
    assert head == b"{%d}\r\n" % len(data) and not isinstance(streamed, bytes)
    assert b"".join(streamed.chunks()) == data.replace(b"\x00", b"\x80")
