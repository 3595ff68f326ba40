"""BINARY (RFC 3516): decoded parts, BINARY.SIZE, partial ranges, literal8 and UNKNOWN-CTE."""

from __future__ import annotations

import base64
import binascii
import imaplib
from collections.abc import Iterator

import pytest
from conftest import RunningServer, client_tls

PAYLOAD = bytes(range(256)) * 40  # every octet, NUL included
TEXT = "Grüße, café = ok\r\n" * 30

MESSAGE = (
    b"From: a@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    + binascii.b2a_qp(TEXT.replace("\r\n", "\n").encode()).replace(b"\n", b"\r\n")
    + b"\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")
    + b"\r\n--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 x\r\n`\r\nend\r\n"
    b"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b1--\r\n"
)


@pytest.fixture
def imap(mailserver: RunningServer) -> Iterator[imaplib.IMAP4_SSL]:
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    m.login(mailserver.user, mailserver.password)
    m.append("INBOX", None, None, MESSAGE)
    m.select("INBOX")
    yield m
    m.logout()


def _fetch(m: imaplib.IMAP4_SSL, item: str, n: str = "1") -> tuple[bytes, bytes]:
    typ, data = m.fetch(n, f"({item})")
    assert typ == "OK", data
    head, value = data[0]  # type: ignore[misc]
    return head, value


def test_binary_is_advertised(imap: imaplib.IMAP4_SSL) -> None:
    assert "BINARY" in imap.capabilities


def test_base64_part_is_decoded_with_literal8(imap: imaplib.IMAP4_SSL) -> None:
    head, value = _fetch(imap, "BINARY.PEEK[2]")
    assert value == PAYLOAD
    assert head.endswith(b"BINARY[2] ~{%d}" % len(PAYLOAD))  # NUL inside: literal8


def test_quoted_printable_part_is_decoded(imap: imaplib.IMAP4_SSL) -> None:
    head, value = _fetch(imap, "BINARY.PEEK[1]")
    assert value == TEXT.encode()
    assert b"~{" not in head  # no NUL: an ordinary literal


def test_binary_size(imap: imaplib.IMAP4_SSL) -> None:
    typ, data = imap.fetch("1", "(BINARY.SIZE[1] BINARY.SIZE[2] BINARY.SIZE[4])")
    assert typ == "OK"
    line = data[0]
    assert b"BINARY.SIZE[1] %d" % len(TEXT.encode()) in line
    assert b"BINARY.SIZE[2] %d" % len(PAYLOAD) in line
    assert b"BINARY.SIZE[4] 5" in line  # identity encoding: "plain" as stored


def test_partial_binary(imap: imaplib.IMAP4_SSL) -> None:
    head, value = _fetch(imap, "BINARY.PEEK[2]<1000.300>")
    assert value == PAYLOAD[1000:1300]
    assert b"BINARY[2]<1000>" in head
    head, value = _fetch(imap, "BINARY.PEEK[2]<10230.100>")
    assert value == PAYLOAD[10230:]


def test_unknown_encoding_gives_unknown_cte(imap: imaplib.IMAP4_SSL) -> None:
    typ, data = imap._simple_command("FETCH", "1", "(BINARY.PEEK[3])")  # type: ignore[attr-defined]
    assert typ == "NO" and b"[UNKNOWN-CTE]" in data[-1]


def test_binary_sets_seen_and_peek_does_not(imap: imaplib.IMAP4_SSL) -> None:
    _fetch(imap, "BINARY.PEEK[4]")
    assert b"\\Seen" not in imap.fetch("1", "(FLAGS)")[1][0]  # type: ignore[operator]
    typ, data = imap.fetch("1", "(BINARY[4])")
    assert b"\\Seen" in b"".join(x if isinstance(x, bytes) else x[0] for x in data)


def test_bad_binary_sections(imap: imaplib.IMAP4_SSL) -> None:
    for item in ("BINARY[1.TEXT]", "BINARY[HEADER]", "BINARY.SIZE[1]<0.10>", "BINARY[0]"):
        with pytest.raises(imaplib.IMAP4.error):
            imap.fetch("1", f"({item})")


def test_binary_of_whole_message_and_missing_part(imap: imaplib.IMAP4_SSL) -> None:
    assert _fetch(imap, "BINARY.PEEK[]")[1] == MESSAGE
    head, value = _fetch(imap, "BINARY.PEEK[9]")
    assert head.endswith(b"BINARY[9] {0}") and value == b""


def test_a_nul_is_never_sent_in_a_plain_literal(imap: imaplib.IMAP4_SSL) -> None:
    # RFC 3501 §9: a literal is CHAR8 (no NUL); BODY[] gives 0x80 instead, octet for octet,
    # as Dovecot does, and BINARY[] (literal8) the stored octets.
    raw = b"From: a@example.test\r\nSubject: nul\x00here\r\n\r\nnul\x00byte\r\n"
    imap.append("INBOX", None, None, raw)
    imap.select("INBOX")
    head, body = _fetch(imap, "BODY.PEEK[]", "2")
    assert body == raw.replace(b"\x00", b"\x80") and head.endswith(b"{%d}" % len(raw))
    _, text = _fetch(imap, "BINARY.PEEK[1]", "2")
    assert text == b"nul\x00byte\r\n"
    typ, data = imap.fetch("2", "(ENVELOPE)")
    assert typ == "OK" and b"\x00" not in b"".join(p for d in data for p in _flat(d))


def _flat(item: bytes | tuple[bytes, ...]) -> tuple[bytes, ...]:
    return item if isinstance(item, tuple) else (item,)
