"""Every POP3 command (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH) and every response code that
applies ([AUTH], [IN-USE], [LOGIN-DELAY], [SYS/TEMP]), with the RFC's example exchanges."""

from __future__ import annotations

import base64
import imaplib
import poplib
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls, running_server
from pop3help import deliver, multiline, pop, raw
from rawclient import RawClient

from ourmail.config import Pop3Settings
from ourmail.pop3.maildrop import Maildrop


def test_capa_before_and_after_tls_and_login(mailserver: RunningServer) -> None:
    p = poplib.POP3("127.0.0.1", mailserver.port("pop3"))
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps  # RFC 2595 §4
    p.stls(context=client_tls())
    caps = p.capa()
    for name in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER"):
        assert name in caps, name
    assert caps["SASL"] == ["PLAIN"] and caps["EXPIRE"] == ["NEVER"]
    assert caps["IMPLEMENTATION"] == ["ourmail"] and "LOGIN-DELAY" not in caps
    p.user(mailserver.user)
    p.pass_(mailserver.password)
    caps = p.capa()
    assert "USER" not in caps and "SASL" not in caps and "TOP" in caps
    p.quit()


def test_session_as_in_rfc_1939(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    c = raw(mailserver)
    # C: STAT  S: +OK 2 320
    c.send(b"STAT\r\n")
    count, size = c.line().split()[1:]
    assert count == b"2"
    # C: LIST  S: +OK 2 messages (320 octets) / 1 120 / 2 200 / .
    c.send(b"LIST\r\n")
    assert c.line().startswith(b"+OK")
    sizes = multiline(c)
    assert [x.split()[0] for x in sizes] == [b"1", b"2"]
    assert sum(int(x.split()[1]) for x in sizes) == int(size)
    c.send(b"LIST 2\r\n")  # S: +OK 2 200
    assert c.line() == b"+OK 2 " + sizes[1].split()[1]
    c.send(b"LIST 3\r\n")  # S: -ERR no such message, only 2 messages in maildrop
    assert c.line().startswith(b"-ERR")
    # C: UIDL  S: +OK / 1 whqtswO00WBw418f9t5JxYwZ / 2 QhdPYR:00WBw1Ph7x7 / .
    c.send(b"UIDL\r\n")
    c.line()
    uidls = multiline(c)
    assert len({u.split()[1] for u in uidls}) == 2
    c.send(b"UIDL 2\r\n")
    assert c.line() == b"+OK " + uidls[1]
    # C: RETR 1  S: +OK 120 octets / <the POP3 server sends the entire message here> / .
    c.send(b"RETR 1\r\n")
    assert c.line().endswith(b" octets")
    body = multiline(c)
    assert body[-2:] == [b"..starts with a dot", b"line 3"]
    # C: TOP 1 10 / DELE 1 / DELE 1 (-ERR message 1 already deleted) / RSET / NOOP / QUIT
    c.send(b"TOP 1 1\r\n")
    assert c.line().startswith(b"+OK")
    assert multiline(c)[-2:] == [b"", b"line 1"]
    c.send(b"DELE 1\r\nDELE 1\r\nSTAT\r\nRSET\r\nSTAT\r\nNOOP\r\nQUIT\r\n")
    assert c.line() == b"+OK Message 1 deleted"
    assert c.line().startswith(b"-ERR")
    assert c.line().startswith(b"+OK 1 ")
    assert c.line().startswith(b"+OK")
    assert c.line().startswith(b"+OK 2 ")
    assert c.line() == b"+OK"
    assert c.line().startswith(b"+OK Bye (0 messages deleted)")
    c.close()


def test_retr_octets_is_the_stored_size(mailserver: RunningServer) -> None:
    deliver(mailserver)
    c = raw(mailserver)
    c.send(b"LIST 1\r\nRETR 1\r\n")
    size = c.line().split()[2]
    assert c.line() == b"+OK " + size + b" octets"
    c.close()


def test_auth_plain(mailserver: RunningServer) -> None:
    creds = base64.b64encode(f"\0{mailserver.user}\0{mailserver.password}".encode())
    c = raw(mailserver, login=False)
    # RFC 5034 §6: C: AUTH PLAIN  S: +  C: dGVzdAB0ZXN0AHRlc3Q=  S: +OK Maildrop locked and ready
    c.send(b"AUTH PLAIN\r\n")
    assert c.line() == b"+ "
    c.send(creds + b"\r\n")
    assert c.line().startswith(b"+OK Maildrop")
    c.close()
    c = raw(mailserver, login=False)
    c.send(b"AUTH PLAIN " + creds + b"\r\n")  # with an initial response
    assert c.line().startswith(b"+OK Maildrop")
    c.close()
    c = raw(mailserver, login=False)
    c.send(b"AUTH PLAIN\r\n*\r\n")  # cancelled
    c.line()
    assert c.line().startswith(b"-ERR")
    c.send(b"AUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\n")
    assert c.line().startswith(b"-ERR [AUTH]")
    assert c.line() == b"-ERR Unsupported authentication mechanism"
    other = base64.b64encode(f"bob\0{mailserver.user}\0{mailserver.password}".encode())
    c.send(b"AUTH PLAIN " + other + b"\r\n")  # authzid: acting as someone else
    assert c.line() == b"-ERR [AUTH] Cannot act as another user"
    bad = base64.b64encode(f"\0{mailserver.user}\0wrong".encode())
    c.send(b"AUTH PLAIN " + bad + b"\r\n")
    assert c.line() == b"-ERR [AUTH] Authentication failed"  # RFC 3206 AUTH-RESP-CODE
    c.close()
    plain = RawClient(mailserver.port("pop3"))
    plain.line()
    plain.send(b"AUTH PLAIN " + creds + b"\r\n")  # never before STLS (RFC 2595 §4)
    assert plain.line() == b"-ERR [AUTH] Authentication is disabled until STLS"
    plain.close()


def test_in_use_while_imap_and_delivery_go_on(mailserver: RunningServer) -> None:
    deliver(mailserver, 1)
    first = pop(mailserver)
    # RFC 2449 §8.1.1: -ERR [IN-USE] for a second session on the same maildrop
    second = poplib.POP3_SSL("127.0.0.1", mailserver.port("pop3s"), context=client_tls())
    second.user(mailserver.user)
    try:
        second.pass_(mailserver.password)
        raise AssertionError("a second POP3 session got the maildrop")
    except poplib.error_proto as e:
        assert b"[IN-USE]" in e.args[0]
    deliver(mailserver, 1)  # delivery goes on
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    m.login(mailserver.user, mailserver.password)
    assert m.select("INBOX")[1] == [b"2"]  # and IMAP
    m.store("1", "+FLAGS", "\\Flagged")
    m.logout()
    assert first.stat()[0] == 1  # the session's view is the snapshot taken at login
    first.quit()
    third = pop(mailserver)  # the lock went with the session
    assert third.stat()[0] == 2
    third.close()  # a dropped connection releases the lock too
    pop(mailserver).quit()


def test_login_delay(tmp_path: Path) -> None:
    with running_server(tmp_path, pop3=Pop3Settings(login_delay=60)) as srv:
        p = pop(srv)
        assert p.capa()["LOGIN-DELAY"] == ["60"]  # RFC 2449 §6.5
        p.quit()
        c = raw(srv, login=False)
        c.send(f"USER {srv.user}\r\nPASS {srv.password}\r\n".encode())
        c.line()
        assert c.line().startswith(b"-ERR [LOGIN-DELAY] Wait ")
        c.close()


def test_a_failed_update_is_sys_temp_and_keeps_the_mail(
    mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(mailserver, 1)

    def broken(self: Maildrop, policy: str, retention: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(Maildrop, "update", broken)
    c = raw(mailserver)
    c.send(b"DELE 1\r\nQUIT\r\n")
    c.line()
    assert c.line() == b"-ERR [SYS/TEMP] Some deleted messages were not removed"
    c.close()
    monkeypatch.undo()
    p = pop(mailserver)
    assert p.stat()[0] == 1
    p.quit()


def test_wrong_state_and_unknown_commands(mailserver: RunningServer) -> None:
    c = raw(mailserver, login=False)
    c.send(b"STAT\r\nFOO\r\nPASS x\r\n")
    assert c.line() == b"-ERR Command not valid in this state"
    assert c.line() == b"-ERR Unknown command"
    assert c.line() == b"-ERR USER first"
    c.send(f"USER {mailserver.user}\r\nPASS {mailserver.password}\r\nUSER x\r\nSTLS\r\n".encode())
    c.line()
    c.line()
    assert c.line() == b"-ERR Command not valid in this state"
    assert c.line() == b"-ERR Command not valid in this state"
    c.close()
