"""CHUNKING / BDAT (RFC 3030) on SMTP and LMTP."""

import smtplib

from conftest import RunningServer
from rawclient import RawClient
from test_smtp import inbox_files


def session(srv: RunningServer) -> RawClient:
    c = RawClient(srv.port("smtp"))
    c.line()
    c.send(b"EHLO c.test\r\n")
    assert any(line[4:] == b"CHUNKING" for line in c.until(b"250 "))
    return c


def test_bdat_chunks_are_stored_verbatim(mailserver: RunningServer) -> None:
    c = session(mailserver)
    first = b"Subject: chunks\r\n\r\n.not stuffed\r"
    second = b"\nsecond line\r\n"
    c.send(b"MAIL FROM:<a@else.test>\r\nRCPT TO:<alice@example.test>\r\n")
    c.send(b"BDAT %d\r\n" % len(first) + first + b"BDAT %d LAST\r\n" % len(second) + second)
    assert c.line().startswith(b"250") and c.line().startswith(b"250")
    assert c.line() == b"250 2.0.0 %d octets received" % (len(first) - 1)
    assert c.line().startswith(b"250 2.0.0 Ok: queued as")
    (stored,) = inbox_files(mailserver, mailserver.user)
    assert stored.endswith(b"Subject: chunks\r\n\r\n.not stuffed\r\nsecond line\r\n")
    assert b"with ESMTP id" in stored


def test_bdat_errors(mailserver: RunningServer) -> None:
    c = session(mailserver)
    c.send(b"BDAT 5\r\nhelloNOOP\r\n")  # no transaction: the 5 octets are read and dropped
    assert c.line().startswith(b"503 5.5.1")
    assert c.line().startswith(b"250 2.0.0 Ok")
    c.send(b"BDAT ten\r\nBDAT 3 SOON\r\n")
    assert c.line().startswith(b"501") and c.line().startswith(b"501")
    c.send(b"MAIL FROM:<a@else.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3\r\nabcDATA\r\n")
    assert [c.line()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"503"]
    c.send(b"BDAT 0 LAST\r\n")
    assert c.line().startswith(b"250 2.0.0 Ok: queued as")
    (stored,) = inbox_files(mailserver, mailserver.user)
    assert stored.endswith(b"\r\nabc")  # stored as sent, byte for byte
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        assert s.noop()[0] == 250


def test_huge_chunk_closes_the_connection(mailserver: RunningServer) -> None:
    c = session(mailserver)
    c.send(b"MAIL FROM:<a@else.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT 999999999999\r\n")
    c.line()
    c.line()
    assert c.line().startswith(b"552 5.3.4")
    assert c.closed()


def test_lmtp_bdat_gives_per_recipient_replies(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("lmtp"))
    c.line()
    c.send(b"LHLO mta\r\n")
    assert any(line[4:] == b"CHUNKING" for line in c.until(b"250 "))
    body = b"Subject: lmtp chunk\r\n\r\nx\r\n"
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<postmaster@example.test>\r\n"
           b"BDAT %d LAST\r\n" % len(body) + body)  # fmt: skip
    assert [c.line()[:9] for _ in range(5)] == [b"250 2.1.0", b"250 2.1.5", b"250 2.1.5",
                                                b"250 2.1.5", b"250 2.1.5"]  # fmt: skip
