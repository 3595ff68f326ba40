import pytest
from hypothesis import given
from hypothesis import strategies as st

from ourmail import mutf7


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("INBOX", b"INBOX"),
        ("&", b"&-"),
        ("Entwürfe", b"Entw&APw-rfe"),
        ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3
    ],
)
def test_known_values(text: str, wire: bytes) -> None:
    assert mutf7.encode(text) == wire
    assert mutf7.decode(wire) == text


@given(st.text())
def test_round_trip(text: str) -> None:
    assert mutf7.decode(mutf7.encode(text)) == text


@pytest.mark.parametrize("bad", [b"&", b"&Jjo", b"&AGE-", b"\xff", b"a&-&Z", b"&U,BTF2XlZyyKng-x&"])
def test_malformed_is_rejected(bad: bytes) -> None:
    with pytest.raises(ValueError):
        mutf7.decode(bad)
