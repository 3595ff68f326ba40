"""POP3 over STLS and implicit TLS, driven by poplib and by hand."""

import imaplib
import poplib
import smtplib

import pytest
from conftest import RunningServer, client_tls
from rawclient import RawClient

MSG = b"From: bob@else.test\r\nSubject: pop\r\n\r\nline 1\r\n.starts with a dot\r\nline 3\r\n"


def deliver(srv: RunningServer, n: int = 1) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        for _ in range(n):
            s.sendmail("bob@else.test", [srv.user], MSG)


def pop(srv: RunningServer) -> poplib.POP3_SSL:
    p = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=client_tls())
    p.user(srv.user)
    p.pass_(srv.password)
    return p


def test_user_pass_only_after_stls(mailserver: RunningServer) -> None:
    p = poplib.POP3("127.0.0.1", mailserver.port("pop3"))
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.user(mailserver.user)
    p.stls(context=client_tls())
    caps = p.capa()
    assert "USER" in caps and "STLS" not in caps and "TOP" in caps and "UIDL" in caps
    p.user(mailserver.user)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_("wrong")
    p.user(mailserver.user)
    assert p.pass_(mailserver.password).startswith(b"+OK")
    p.quit()


def test_transaction_commands(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    p = pop(mailserver)
    count, size = p.stat()
    assert count == 2
    resp, listing, _ = p.list()
    assert sum(int(x.split()[1]) for x in listing) == size
    resp, lines, octets = p.retr(1)
    assert lines[-3:] == [b"line 1", b".starts with a dot", b"line 3"]  # poplib un-stuffs
    assert octets >= size // 2
    resp, top, _ = p.top(2, 1)
    assert top[-2:] == [b"", b"line 1"]
    uidls = p.uidl()[1]
    assert len({u.split()[1] for u in uidls}) == 2
    assert p.uidl(1).split()[2] == uidls[0].split()[1]
    p.dele(1)
    assert p.stat()[0] == 1
    with pytest.raises(poplib.error_proto):
        p.retr(1)
    p.rset()
    assert p.stat()[0] == 2
    assert p.noop().startswith(b"+OK")
    p.quit()


def test_retr_is_byte_stuffed_crlf_on_the_wire(mailserver: RunningServer) -> None:
    deliver(mailserver)
    c = RawClient(mailserver.port("pop3s"), tls=True)
    c.line()
    c.send(f"USER {mailserver.user}\r\nPASS {mailserver.password}\r\nRETR 1\r\n".encode())
    c.line()
    c.line()
    assert c.line().startswith(b"+OK")
    lines = [c.line()]
    while lines[-1] != b".":
        lines.append(c.line())
    body = b"\r\n".join(lines)
    assert b"\r\n..starts with a dot\r\nline 3\r\n." in body
    assert b"\r\r" not in body


def test_dele_hides_from_pop3_but_imap_keeps_it(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    p = pop(mailserver)
    first = p.uidl(1).split()[2]
    p.dele(1)
    p.quit()
    p = pop(mailserver)
    assert p.stat()[0] == 1
    assert first not in b" ".join(p.uidl()[1])
    p.quit()
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    m.login(mailserver.user, mailserver.password)
    assert m.select("INBOX")[1] == [b"2"]
    assert b"$POP3Deleted" in m.fetch("1", "FLAGS")[1][0]
    m.logout()


def test_dele_without_quit_changes_nothing(mailserver: RunningServer) -> None:
    deliver(mailserver)
    c = RawClient(mailserver.port("pop3s"), tls=True)
    c.line()
    c.send(f"USER {mailserver.user}\r\nPASS {mailserver.password}\r\nDELE 1\r\n".encode())
    assert [c.line()[:3] for _ in range(3)] == [b"+OK"] * 3
    c.close()
    p = pop(mailserver)
    assert p.stat()[0] == 1
    p.quit()
