"""Large messages: BODY[], partial fetches and BODY search read the message in chunks from a
memory map of its file (RFC 3501 §6.4.5 partial ranges), byte for byte."""

from __future__ import annotations

import imaplib
import os
import socket
import time

import pytest
from conftest import RunningServer, client_tls

from ourmail.auth.revocation import SessionRevoker
from ourmail.mime import content
from ourmail.store import folder as folder_mod


def _big_message(size: int) -> bytes:
    head = b"From: a@example.test\r\nSubject: big\r\n\r\n"
    line = os.urandom(38).hex().encode() + b"\r\n"
    body = line * (size // len(line))
    return head + body + b"needle-at-the-end\r\n"


@pytest.fixture
def imap(mailserver: RunningServer) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    m.login(mailserver.user, mailserver.password)
    return m


def test_big_body_streams_from_a_map_byte_for_byte(
    imap: imaplib.IMAP4_SSL, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg = _big_message(3 * 1024 * 1024)
    imap.append("INBOX", None, None, msg)
    imap.select("INBOX")
    reads: list[int] = []
    original = folder_mod.StoredMessage.read
    monkeypatch.setattr(
        folder_mod.StoredMessage, "read", lambda self: reads.append(1) or original(self)
    )
    written: list[int] = []
    chunks = content.Span.chunks
    monkeypatch.setattr(
        content.Span, "chunks", lambda self: (written.append(len(c)) or c for c in chunks(self))
    )
    typ, data = imap.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == msg  # type: ignore[index]
    assert reads == []  # mapped, never read into one bytes object
    assert max(written) == content.CHUNK and sum(written) == len(msg)
    typ, data = imap.fetch("1", "(BODY.PEEK[]<2000000.1000> BODY.PEEK[TEXT]<0.10>)")
    assert data[0][1] == msg[2000000:2001000]  # type: ignore[index]
    imap.logout()


def test_partial_beyond_the_end_and_rfc822(imap: imaplib.IMAP4_SSL) -> None:
    msg = _big_message(400 * 1024)
    imap.append("INBOX", None, None, msg)
    imap.select("INBOX")
    typ, data = imap.fetch("1", f"(BODY.PEEK[]<{len(msg) + 5}.100>)")
    assert data[0][0].endswith(b"{0}") and data[0][1] == b""  # type: ignore[index]
    typ, data = imap.fetch("1", "(RFC822)")
    assert data[0][1] == msg  # type: ignore[index]
    typ, data = imap.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]  # type: ignore[operator]
    imap.logout()


def test_body_search_in_a_big_message_crosses_chunks(imap: imaplib.IMAP4_SSL) -> None:
    imap.append("INBOX", None, None, _big_message(1024 * 1024))
    imap.append("INBOX", None, None, b"Subject: small\r\n\r\nnothing here\r\n")
    imap.select("INBOX")
    assert imap.search(None, "BODY", "NEEDLE-AT-THE-END")[1] == [b"1"]
    assert imap.search(None, "TEXT", '"subject: big"')[1] == [b"1"]
    assert imap.search(None, "BODY", "subject")[1] == [b""]
    imap.logout()


def test_contains_finds_a_needle_split_across_chunks() -> None:
    data = b"x" * (content.CHUNK - 3) + b"NeEdLe" + b"y" * 10
    assert content.contains(data, 0, len(data), b"needle")
    assert not content.contains(data, 0, content.CHUNK, b"needle")
    assert content.contains(data, 0, 5, b"")


def test_a_login_revoked_mid_literal_is_closed_without_a_bye_inside_it(
    imap: imaplib.IMAP4_SSL, mailserver: RunningServer
) -> None:
    """The account is disabled while a big BODY[] streams (the client reading slowly): no
    ``* BYE`` lands inside the literal (RFC 3501 §4.3); the connection just closes."""
    msg = _big_message(12 * 1024 * 1024)
    imap.append("INBOX", None, None, msg)
    imap.logout()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # little held in the buffers
    raw.connect(("127.0.0.1", mailserver.port("imaps")))
    sock = client_tls().wrap_socket(raw)
    sock.settimeout(60)
    stream = sock.makefile("rb")
    stream.readline()
    login = f'a LOGIN {mailserver.user} "{mailserver.password}"\r\n'
    sock.sendall(login.encode() + b"b SELECT INBOX\r\nc FETCH 1 BODY.PEEK[]\r\n")
    line = stream.readline()
    while not line.startswith(b"* 1 FETCH"):
        line = stream.readline()
    size = int(line.rsplit(b"{", 1)[1].split(b"}")[0])
    data = stream.read(65536)  # then nothing until the account is disabled
    mailserver.server.accounts.set_disabled(mailserver.user, {"since": "now", "reason": ""})
    revoker = next(s for s in mailserver.server.service if isinstance(s, SessionRevoker))
    while len(revoker):  # the revoker looks once a second; the stream waits for the client
        time.sleep(0.1)
    while chunk := stream.read(1 << 20):
        data += chunk
    sock.close()
    assert b"* BYE" not in data[:size]
    # Closed inside the literal, or (had it all been buffered first) BYE after the reply.
    assert len(data) < size or data[size:].startswith(b")\r\nc OK FETCH completed\r\n* BYE")
