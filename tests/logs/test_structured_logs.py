"""The ``smtp.transaction`` and ``login`` log events of a real server (docs/logging.md):
one per transaction and per login attempt, with their fields, in text and JSON lines."""

from __future__ import annotations

import json
import re
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import RunningServer, client_tls, running_server
from loghelp import Events, captured, imap_login, pop3_login, smtp_login
from webhelp import Browser

from ourmail.config import Limits, LogSettings, ThrottleSettings

MAX_SIZE = 20_000
SECRET = "Tr0ub4dor&3-never-logged"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    limits = attrs.evolve(Limits(), max_message_size=MAX_SIZE)
    throttle = ThrottleSettings(base_delay=0.01, max_delay=0.05, client_limit=4)
    with running_server(tmp_path, limits=limits, auth_throttle=throttle) as server:
        yield server


def message(msgid: str, size: int = 0, author: str = "bob@else.test") -> bytes:
    body = b"x" * 70 + b"\r\n"
    return (
        f"From: {author}\r\nTo: alice@example.test\r\nSubject: hi\r\nMessage-ID: {msgid}\r\n\r\n"
    ).encode() + body * max(1, size // len(body))


def test_one_event_per_smtp_transaction(srv: RunningServer) -> None:
    with captured() as events:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=("127.0.0.1", 0)) as s:
            port = s.sock.getsockname()[1]
            s.ehlo("client.example")
            # Accepted.
            s.sendmail("bob@else.test", [srv.user], message("<one@else.test>"))
            # A refused recipient: the transaction ends with no message.
            assert s.docmd("MAIL", "FROM:<carol@else.test>")[0] == 250
            assert s.docmd("RCPT", "TO:<nobody@example.test>")[0] == 550
            s.rset()
            # Too big: refused at the end of DATA.
            s.mail("dave@else.test")  # no SIZE=: the limit is found at the end of DATA
            s.rcpt(srv.user)
            assert s.data(message("<big@else.test>", 2 * MAX_SIZE))[0] == 552
        found = events.wait("smtp.transaction", 3)
    accepted, refused_rcpt, too_big = found
    assert accepted["result"] == "accepted" and accepted["code"] == 250
    assert accepted["service"] == "smtp"
    assert (accepted["client"], accepted["client_port"]) == ("127.0.0.1", port)
    assert accepted["helo"] == "client.example" and accepted["tls"] == "none"
    assert accepted["user"] == "" and accepted["sender"] == "bob@else.test"
    assert accepted["recipients"] == [srv.user] and accepted["rcpt_count"] == 1
    assert accepted["message_id"] == "<one@else.test>"
    assert accepted["size"] == len(message("<one@else.test>"))
    assert accepted["reply"] == f"2.0.0 Ok: queued as {accepted['queue_id']}"
    assert accepted["duration"] >= 0

    assert refused_rcpt["result"] == "refused" and refused_rcpt["code"] == 550
    assert refused_rcpt["sender"] == "carol@else.test"
    assert (refused_rcpt["rcpt_count"], refused_rcpt["rcpt_refused"]) == (0, 1)
    assert refused_rcpt["queue_id"] == "-" and refused_rcpt["message_id"] == ""

    assert too_big["result"] == "refused" and too_big["code"] == 552
    assert "size exceeds" in too_big["reply"] and too_big["size"] > MAX_SIZE
    assert too_big["recipients"] == [srv.user]

    for event in found:  # the human line says the same
        line = events.text().splitlines()
        assert any(f"id={event['queue_id']} " in li and "smtp transaction" in li for li in line)


def test_transaction_over_tls_with_auth_and_the_json_line(srv: RunningServer) -> None:
    with captured() as events:
        with smtplib.SMTP("127.0.0.1", srv.port("submission")) as s:
            s.starttls(context=client_tls())
            s.login(srv.user, srv.password)
            msg = message("<tls@example.test>", author=srv.user)
            s.sendmail(srv.user, [srv.user, "friend@far.test"], msg)
        (event,) = events.wait("smtp.transaction", 1)
    assert event["service"] == "submission" and event["user"] == srv.user
    assert re.fullmatch(r"TLSv1\.[23]/\S+", event["tls"])
    assert event["rcpt_count"] == 2
    line = next(li for li in events.json().splitlines() if '"smtp.transaction"' in li)
    parsed = json.loads(line)
    assert parsed["event"] == "smtp.transaction" and parsed["tls"] == event["tls"]
    assert parsed["log_text"].startswith("smtp transaction accepted: client=127.0.0.1 ")


def test_a_session_without_a_message_after_an_error(srv: RunningServer) -> None:
    with captured() as events:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.ehlo("client.example")
            assert s.docmd("DATA")[0] == 503  # no MAIL: not a transaction, an error
        (event,) = events.wait("smtp.transaction", 1)
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.ehlo("quiet.example")  # no error, no transaction: nothing logged
    assert event["code"] == 503 and event["result"] == "refused"
    assert event["mail_given"] is False and event["rcpt_count"] == 0
    assert len(events.of("smtp.transaction")) == 1


def test_lmtp_logs_once_for_all_the_recipients_replies(tmp_path: Path) -> None:
    listen = {"lmtp": "tcp:0:interface=127.0.0.1"}
    with running_server(tmp_path, listen=listen) as srv, captured() as events:
        srv.add_user(f"bob@{srv.domain}")
        with smtplib.LMTP("127.0.0.1", srv.port("lmtp")) as s:
            s.ehlo("mta.example")
            s.mail("x@else.test")
            s.rcpt(srv.user)
            s.rcpt(f"bob@{srv.domain}")
            assert s.data(message("<l@else.test>"))[0] == 250
            assert s.getreply()[0] == 250  # RFC 2033 §4.2: one reply per recipient
        (event,) = events.wait("smtp.transaction", 1)
    assert event["service"] == "lmtp" and event["result"] == "accepted"
    assert event["rcpt_count"] == 2


def test_recipients_can_be_left_out(tmp_path: Path) -> None:
    listen = {"lmtp": "tcp:0:interface=127.0.0.1"}
    with (
        running_server(tmp_path, listen=listen, log=LogSettings(recipients=False)) as srv,
        captured() as events,
    ):
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.sendmail("bob@else.test", [srv.user], message("<p@else.test>"))
            # A refused recipient: its address is in the reply's text.
            assert s.docmd("MAIL", "FROM:<carol@else.test>")[0] == 250
            assert s.docmd("RCPT", "TO:<secret.person@example.test>")[0] == 550
        with smtplib.LMTP("127.0.0.1", srv.port("lmtp")) as s:  # LMTP's replies name them
            assert s.sendmail("x@else.test", [srv.user], message("<l@else.test>")) == {}
        found = events.wait("smtp.transaction", 3)
    assert [e["recipients"] for e in found] == [[], [], []]
    assert [e["rcpt_count"] for e in found] == [1, 0, 1]
    assert found[1]["reply"].startswith("5.1.1 <redacted>: Recipient address rejected")
    assert found[2]["reply"].startswith("2.1.5 <redacted> delivered as ")
    lines = (events.text() + events.json()).splitlines()
    logged = "".join(li for li in lines if "smtp transaction" in li)
    assert "<redacted>" in logged
    assert srv.user not in logged and "secret.person" not in logged


def _logins(events: Events, n: int) -> list[dict[str, object]]:
    return events.wait("login", n)


def test_one_login_event_per_attempt_on_every_service(srv: RunningServer) -> None:
    good, bad = srv.password, SECRET
    with captured() as events:
        assert imap_login(srv, srv.user, good, "127.0.0.1").startswith(b"a OK")
        assert imap_login(srv, srv.user, bad, "127.0.0.2").startswith(b"a NO")
        assert pop3_login(srv, srv.user, good, "127.0.0.1").startswith(b"+OK")
        assert pop3_login(srv, "nobody@example.test", bad, "127.0.0.3").startswith(b"-ERR")
        assert smtp_login(srv, srv.user, good, "127.0.0.1") == 235
        assert smtp_login(srv, srv.user, bad, "127.0.0.4") == 535
        assert Browser(srv).login(srv.user, good).status == 303
        assert Browser(srv, "127.0.0.5").login(srv.user, bad).status == 401
        found = _logins(events, 8)
    got = [(e["service"], e["client"], e["user"], e["mechanism"], e["result"]) for e in found]
    assert got == [
        ("imap", "127.0.0.1", srv.user, "LOGIN", "ok"),
        ("imap", "127.0.0.2", srv.user, "LOGIN", "bad-password"),
        ("pop3", "127.0.0.1", srv.user, "USER", "ok"),
        ("pop3", "127.0.0.3", "nobody@example.test", "USER", "unknown-user"),
        ("smtp", "127.0.0.1", srv.user, "PLAIN", "ok"),
        ("smtp", "127.0.0.4", srv.user, "PLAIN", "bad-password"),
        ("web", "127.0.0.1", srv.user, "form", "ok"),
        ("web", "127.0.0.5", srv.user, "form", "bad-password"),
    ]
    text, js = events.text(), events.json()
    for line in js.splitlines():
        json.loads(line)
    assert "login failed: client=127.0.0.2 service=imap " in text
    # Neither the password nor its base64 (SASL PLAIN) is anywhere in either format.
    for log in (text, js):
        assert SECRET not in log and good not in log
        assert "VHIwdWI0ZG9y" not in log  # base64 of the password's start


def test_throttled_and_no_tls(srv: RunningServer) -> None:
    with captured() as events:
        for _ in range(5):  # the fifth is refused without checking: client_limit=4
            imap_login(srv, "bob@example.test", SECRET, "127.0.0.9")
        with smtplib.SMTP("127.0.0.1", srv.port("submission")) as s:
            s.ehlo("x")
            assert s.docmd("AUTH", "PLAIN")[0] == 538
        with socket.create_connection(("127.0.0.1", srv.port("imap"))) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(f"a LOGIN {srv.user} {SECRET}\r\n".encode())
            assert b"PRIVACYREQUIRED" in f.readline()
        with socket.create_connection(("127.0.0.1", srv.port("pop3"))) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(f"PASS {SECRET}\r\n".encode())
            assert f.readline().startswith(b"-ERR")
        found = _logins(events, 8)
    assert [e["result"] for e in found[:5]] == ["unknown-user"] * 4 + ["throttled"]
    no_tls = [(e["result"], e["service"], e["user"], e["mechanism"]) for e in found[5:]]
    assert no_tls == [
        ("no-tls", "smtp", "", "PLAIN"),
        ("no-tls", "imap", "", "LOGIN"),
        ("no-tls", "pop3", "", "USER"),
    ]
    assert "login refused: client=127.0.0.1 service=smtp " in events.text()
    assert SECRET not in events.text() and SECRET not in events.json()


def test_bdat_and_a_connection_dropped_mid_transaction(srv: RunningServer) -> None:
    with captured() as events:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.ehlo("x")
            s.docmd("MAIL", "FROM:<a@b.test>")
            s.docmd("RCPT", f"TO:<{srv.user}>")
            s.send(b"BDAT 10\r\n0123456789")
            assert s.getreply()[0] == 250
            s.send(b"BDAT 0 LAST\r\n")
            assert s.getreply()[0] == 250
        s = smtplib.SMTP("127.0.0.1", srv.port("submission"))
        s.starttls(context=client_tls())
        s.login(srv.user, srv.password)
        s.docmd("MAIL", f"FROM:<{srv.user}>")
        s.docmd("RCPT", "TO:<nobody@example.test>")
        s.close()  # no QUIT: the transaction ends with the connection
        bdat, dropped = events.wait("smtp.transaction", 2)
    assert (bdat["result"], bdat["size"], bdat["rcpt_count"]) == ("accepted", 10, 1)
    assert (dropped["result"], dropped["code"], dropped["rcpt_refused"]) == ("refused", 550, 1)
    assert dropped["user"] == srv.user and dropped["tls"].startswith("TLSv1.")


def _accepted_after(s: smtplib.SMTP, user: str, sender: str, refused: tuple[str, str]) -> int:
    """MAIL, RCPT, a command the server refuses (it keeps the transaction), then DATA."""
    assert s.docmd("MAIL", f"FROM:<{sender}>")[0] == 250
    assert s.docmd("RCPT", f"TO:<{user}>")[0] == 250
    code = s.docmd(*refused)[0]
    assert code >= 500
    assert s.data(message(f"<{sender}>", author=sender))[0] == 250
    return code


def test_refused_commands_neither_end_nor_change_the_transaction(srv: RunningServer) -> None:
    """A refused LHLO/EHLO/HELO/STARTTLS or nested MAIL leaves the server's transaction as it
    was: the log must not call it abandoned, nor take a new sender from the nested MAIL."""
    with captured() as events:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.ehlo("c.example")
            assert _accepted_after(s, srv.user, "one@far.test", ("LHLO", "x")) == 500
            nested = ("MAIL", "FROM:<framed@victim.test>")
            assert _accepted_after(s, srv.user, "two@far.test", nested) == 503
            assert _accepted_after(s, srv.user, "three@far.test", ("EHLO", "")) == 501
            assert _accepted_after(s, srv.user, "four@far.test", ("HELO", "")) == 501
        with smtplib.SMTP("127.0.0.1", srv.port("submission")) as s:
            s.starttls(context=client_tls())
            s.login(srv.user, srv.password)
            assert _accepted_after(s, srv.user, srv.user, ("STARTTLS", "")) == 503
        found = events.wait("smtp.transaction", 5)
    got = [(e["result"], e["sender"]) for e in found]
    senders = ["one@far.test", "two@far.test", "three@far.test", "four@far.test", srv.user]
    assert got == [("accepted", s) for s in senders]
    assert "framed@victim.test" not in events.text()


def test_refused_helo_on_lmtp_keeps_the_transaction(tmp_path: Path) -> None:
    listen = {"lmtp": "tcp:0:interface=127.0.0.1"}
    with running_server(tmp_path, listen=listen) as srv, captured() as events:
        with smtplib.LMTP("127.0.0.1", srv.port("lmtp")) as s:
            s.ehlo("mta.example")
            assert _accepted_after(s, srv.user, "one@far.test", ("EHLO", "x")) == 500
            assert _accepted_after(s, srv.user, "two@far.test", ("HELO", "x")) == 500
            # A real LHLO does end the transaction (RFC 2033 §4.1, RFC 5321 §4.1.4).
            assert s.docmd("MAIL", "FROM:<three@far.test>")[0] == 250
            assert s.docmd("LHLO", "again.example")[0] == 250
        found = events.wait("smtp.transaction", 3)
    got = [(e["result"], e["sender"]) for e in found]
    assert got == [
        ("accepted", "one@far.test"),
        ("accepted", "two@far.test"),
        ("abandoned", "three@far.test"),
    ]
