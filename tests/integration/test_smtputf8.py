"""SMTPUTF8 (RFC 6531): UTF-8 addresses, only when the client asks for it."""

import smtplib

from conftest import RunningServer
from rawclient import RawClient

from ourmail.addresses import normalise_address


def test_utf8_recipient(mailserver: RunningServer) -> None:
    user = normalise_address("Jürgen@example.test")
    mailserver.add_user(user)
    msg = "From: Zoë <zoe@else.test>\r\nSubject: Grüße\r\n\r\nHallo Jürgen\r\n".encode()
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        s.ehlo()
        assert s.has_extn("smtputf8")
        assert (
            s.sendmail("zoë@else.test", ["JÜRGEN@example.test"], msg, mail_options=["SMTPUTF8"])
            == {}
        )
    folder = mailserver.server.store.user(user).folder("INBOX")
    folder.sync()
    (uid,) = folder.uids()
    stored = folder.message(uid).read()
    assert stored.endswith(msg)
    assert "for <jürgen@example.test>".encode() in stored and b"with UTF8SMTP id" in stored


def test_utf8_address_needs_the_parameter(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("smtp"))
    c.line()
    c.send(b"EHLO c\r\n")
    c.until(b"250 ")
    c.send("MAIL FROM:<zoë@else.test>\r\n".encode())
    assert c.line().startswith(b"553 5.6.7")
    c.send("MAIL FROM:<zoe@else.test>\r\nRCPT TO:<jürgen@example.test>\r\n".encode())
    assert c.line().startswith(b"250")
    assert c.line().startswith(b"553 5.6.7")
    c.send(b"MAIL FROM:<a@else.test> SMTPUTF8=yes\r\n")
    assert c.line().startswith(b"503")  # nested MAIL
