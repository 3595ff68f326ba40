"""ESMTP on the MX and submission listeners, driven by smtplib and by hand."""

import os
import smtplib

import pytest
from conftest import RunningServer, client_tls
from rawclient import RawClient

MSG = b"From: bob@else.test\r\nTo: alice@example.test\r\nSubject: Hello\r\n\r\nHi Alice\r\n.leading dot\r\n"


def inbox_files(srv: RunningServer, address: str) -> list[bytes]:
    root = srv.server.store.shards.user_dir(address)
    out = []
    for sub in ("new", "cur"):
        d = root / sub
        if d.exists():
            out += [(d / n).read_bytes() for n in sorted(os.listdir(d))]
    return out


def test_ehlo_lists_the_extensions_and_starttls(mailserver: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        code, text = s.ehlo("client.test")
        assert code == 250
        for ext in (
            b"PIPELINING",
            b"SIZE 52428800",
            b"8BITMIME",
            b"ENHANCEDSTATUSCODES",
            b"STARTTLS",
        ):
            assert ext in text.split(b"\n")
        assert b"AUTH" not in text
        s.starttls(context=client_tls())
        code, text = s.ehlo("client.test")
        assert b"STARTTLS" not in text and b"AUTH" not in text  # no AUTH on the MX port


def test_delivery_is_on_disk_with_received_header(mailserver: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        s.starttls(context=client_tls())
        assert s.sendmail("bob@else.test", ["Alice@Example.Test"], MSG) == {}
    (stored,) = inbox_files(mailserver, mailserver.user)
    assert stored.startswith(b"Received: from ")
    assert b"with ESMTPS id " in stored and b"for <alice@example.test>" in stored
    assert stored.endswith(MSG)  # dot-unstuffed, CRLF, byte for byte


def test_unknown_local_user_and_relay_are_refused(mailserver: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        s.ehlo()
        s.mail("bob@else.test")
        assert s.rcpt("nobody@example.test")[0] == 550
        code, text = s.rcpt("carol@remote.test")
        assert (code, text[:5]) == (554, b"5.7.1")
        assert s.rcpt("postmaster")[0] in (250, 550)


def test_pipelined_transaction(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("smtp"))
    c.line()
    c.send(b"EHLO c.test\r\n")
    c.until(b"250 ")
    c.send(
        b"MAIL FROM:<b@else.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
        b"DATA\r\n"
    )
    assert c.line().startswith(b"250 2.1.0")
    assert c.line().startswith(b"550 5.1.1")
    assert c.line().startswith(b"250 2.1.5")
    assert c.line().startswith(b"354")
    c.send(b"Subject: p\r\n\r\n..dot\r\nbare\nlf\r\n.\r\nQUIT\r\n")
    assert c.line().startswith(b"250 2.0.0")
    assert c.line().startswith(b"221")
    (stored,) = inbox_files(mailserver, mailserver.user)
    assert stored.endswith(b"Subject: p\r\n\r\n.dot\r\nbare\r\nlf\r\n")


def test_smuggled_end_of_data_is_not_an_end(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("smtp"))
    c.line()
    c.send(b"HELO c\r\nMAIL FROM:<b@else.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    c.until(b"354")
    c.send(b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<evil@else.test>\r\n.\r\n")
    assert c.line().startswith(b"250 ")
    (stored,) = inbox_files(mailserver, mailserver.user)
    assert b"MAIL FROM:<evil@else.test>" in stored  # part of the one message, not a command


def test_size_limits(mailserver: RunningServer) -> None:
    limit = 52428800
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        s.ehlo()
        code, text = s.mail("b@else.test", [f"SIZE={limit + 1}"])
        assert (code, text[:5]) == (552, b"5.3.4")
    c = RawClient(mailserver.port("smtp"))
    c.line()
    c.send(b"HELO c\r\nMAIL FROM:<b@else.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    c.until(b"354")
    chunk = (b"x" * 998 + b"\r\n") * 1000
    for _ in range(limit // len(chunk) + 2):
        c.send(chunk)
    c.send(b".\r\nNOOP\r\n")
    assert c.line().startswith(b"552 5.3.4")
    assert c.line().startswith(b"250")  # the session goes on
    assert inbox_files(mailserver, mailserver.user) == []


def test_bad_input_gets_errors_and_the_server_stays_up(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("smtp"))
    c.line()
    c.send(b"FROBNICATE\r\n")
    assert c.line().startswith(b"500 5.5.2")
    c.send(b"X" * 100_000 + b"\r\n")
    assert c.line().startswith(b"500 5.5.2 Line too long")
    c.send(b"MAIL FROM:<a@b>\r\n")
    assert c.line().startswith(b"503")
    c.send(b"HELO c\r\nMAIL FROM:no-brackets\r\nRCPT TO:<x@example.test>\r\nDATA\r\nAUTH PLAIN\r\n")
    assert c.line().startswith(b"250")
    assert c.line().startswith(b"501")
    assert c.line().startswith(b"503")
    assert c.line().startswith(b"503")
    assert c.line().startswith(b"502")  # AUTH is not offered on the MX port
    c.send(b"\xff\xfe\x00garbage\r\nQUIT\r\n")
    assert c.line().startswith(b"500")
    assert c.line().startswith(b"221")
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        assert s.noop()[0] == 250


def test_too_many_errors_closes(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("smtp"))
    c.line()
    c.send(b"BAD\r\n" * 25)
    lines = c.until(b"421")
    assert lines[-1].startswith(b"421 4.7.0")
    assert c.closed()


def test_starttls_discards_pipelined_plaintext(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("smtp"))
    c.line()
    c.send(b"EHLO c\r\n")
    c.until(b"250 ")
    c.send(b"STARTTLS\r\nRSET\r\n")  # the injected RSET must never be answered
    assert c.line().startswith(b"220 2.0.0")
    c.buf = b""
    c.starttls()
    c.send(b"NOOP\r\n")
    assert c.line().startswith(b"250 2.0.0 Ok")
    c.send(b"MAIL FROM:<a@else.test>\r\n")
    assert c.line().startswith(b"503")  # RFC 3207: EHLO again after TLS


def test_submission_requires_tls_then_auth(mailserver: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", mailserver.port("submission")) as s:
        code, text = s.ehlo()
        assert b"AUTH" not in text
        code, text = s.docmd("AUTH", "PLAIN AGFsaWNlAHg=")
        assert (code, text[:6]) == (538, b"5.7.11")
        s.starttls(context=client_tls())
        s.ehlo()
        assert s.has_extn("AUTH")
        assert s.mail(mailserver.user)[0] == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(mailserver.user, "wrong password")
        s.login(mailserver.user, mailserver.password)
        own = MSG.replace(b"From: bob@else.test", b"From: Alice <alice@example.test>")
        assert s.sendmail(mailserver.user, [mailserver.user], own) == {}
        assert s.mail(mailserver.user)[0] == 250
        assert s.rcpt("carol@remote.test")[0] == 250  # authenticated: queued for delivery
        s.rset()
    (stored,) = inbox_files(mailserver, mailserver.user)
    assert b"with ESMTPSA" in stored


def test_submissions_implicit_tls_with_auth_login(mailserver: RunningServer) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", mailserver.port("submissions"), context=client_tls()) as s:
        s.ehlo()
        s.login(mailserver.user, mailserver.password)  # smtplib picks PLAIN; try LOGIN too
    with smtplib.SMTP_SSL("127.0.0.1", mailserver.port("submissions"), context=client_tls()) as s:
        s.ehlo()
        s.user, s.password = mailserver.user, mailserver.password
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235


def test_large_message_to_two_recipients(mailserver: RunningServer) -> None:
    mailserver.add_user("bob@example.test")
    big = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 2048  # about 2 MB: spooled on disk
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        assert s.sendmail("x@else.test", [mailserver.user, "bob@example.test"], big) == {}
    for address in (mailserver.user, "bob@example.test"):
        (stored,) = inbox_files(mailserver, address)
        assert stored.endswith(big)
    assert list((mailserver.data / "spool" / "incoming").iterdir()) == []
