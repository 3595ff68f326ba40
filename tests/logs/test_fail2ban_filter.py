"""contrib/fail2ban/filter.d/ourmail.conf against the log of a real server, checked by the real
``fail2ban-regex`` (Debian's fail2ban): it counts exactly the failing client's failed logins,
in the text and the JSON format, and a client cannot make it count another address with a
crafted user name, HELO or address (CR/LF, ANSI escapes, a forged ``login failed`` line)."""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls, running_server
from loghelp import captured, imap_login, pop3_login, smtp_login, write_logs
from twisted.logger import LogLevel, formatEventAsClassicLogText
from webhelp import Browser

from ourmail.config import ThrottleSettings

FILTER = Path(__file__).resolve().parents[2] / "contrib/fail2ban/filter.d/ourmail.conf"
JAIL = Path(__file__).resolve().parents[2] / "contrib/fail2ban/jail.d/ourmail.conf"
ATTACKER, USER = "127.0.0.66", "127.0.0.1"
FORGED = (
    '" mechanism=LOGIN result=bad-password\r\n'
    "2026-12-01T00:00:00+0000 [ourmail.logs#info] login failed: client=6.6.6.6 service=imap "
    'user="a" mechanism=LOGIN result=bad-password\n'
    "login failed: client=7.7.7.7 "
)


def banned(log: Path) -> list[str]:
    """The addresses fail2ban-regex finds in ``log``, one per failure."""
    out = subprocess.run(
        ["fail2ban-regex", "-o", "ip", str(log), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.split()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as server:
        yield server


def test_fail2ban_counts_only_the_failing_client(srv: RunningServer, tmp_path: Path) -> None:
    with captured() as events:
        # Good logins on every service.
        assert imap_login(srv, srv.user, srv.password, USER).startswith(b"a OK")
        assert pop3_login(srv, srv.user, srv.password, USER).startswith(b"+OK")
        assert smtp_login(srv, srv.user, srv.password, USER) == 235
        assert Browser(srv, USER).login(srv.user, srv.password).status == 303
        # Five failures from the attacker, four with crafted names.
        assert imap_login(srv, srv.user, "wrong", ATTACKER).startswith(b"a NO")
        assert imap_login(srv, "x" + FORGED, "wrong", ATTACKER).startswith(b"a NO")
        esc = "\x1b[2K\x1b[1Alogin failed: client=6.6.6.6"
        assert pop3_login(srv, esc, "wrong", ATTACKER).startswith(b"-ERR")
        assert smtp_login(srv, "\u202elogin failed: client=8.8.8.8", "wrong", ATTACKER) == 535
        assert Browser(srv, ATTACKER).login("y" + FORGED, "wrong").status == 401
        # Mail with a crafted HELO and address: its transaction line must not count.
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=(ATTACKER, 0)) as s:
            s.ehlo("login\x1b[0mfailed:client=6.6.6.6")
            s.docmd("MAIL", "FROM:<login_failed:client=6.6.6.6@x.test>")
            s.docmd("RCPT", f"TO:<{srv.user}>")
            s.docmd("RSET")
        # A login refused before STARTTLS is not a guess: not counted.
        with smtplib.SMTP("127.0.0.1", srv.port("submission"), source_address=(ATTACKER, 0)) as s:
            s.ehlo("x")
            assert s.docmd("AUTH", "PLAIN")[0] == 538
        events.wait("login", 10)
        events.wait("smtp.transaction", 1)
    text, js = write_logs(events, tmp_path)
    assert "6.6.6.6" in text.read_text() and "7.7.7.7" in js.read_text()  # the bait is there
    assert banned(text) == [ATTACKER] * 5
    assert banned(js) == [ATTACKER] * 5


def test_a_locked_account_does_not_get_its_owner_banned(tmp_path: Path) -> None:
    """Once an account is locked out, a login to it from an address that never logged in is
    refused unchecked: logged, but not as a failure fail2ban counts, or an attacker could get
    the owner's addresses banned.  A client that is itself locked out stays counted."""
    owner = "127.0.0.8"  # the owner, on an address new to the account
    throttle = ThrottleSettings(base_delay=0.01, max_delay=0.05, client_limit=5, account_limit=3)
    with running_server(tmp_path, auth_throttle=throttle) as srv, captured() as events:
        for _ in range(3):  # the account is locked out after these
            assert imap_login(srv, srv.user, "wrong", ATTACKER).startswith(b"a NO")
        assert imap_login(srv, srv.user, srv.password, owner).startswith(b"a NO")
        assert smtp_login(srv, srv.user, srv.password, owner) == 535
        for _ in range(3):  # the fifth failure locks the attacker's address out too
            assert imap_login(srv, srv.user, "wrong", ATTACKER).startswith(b"a NO")
        found = events.wait("login", 8)
    results = [(e["client"], e["result"]) for e in found]
    assert results == [(ATTACKER, "bad-password")] * 3 + [
        (owner, "account-locked"),
        (owner, "account-locked"),
        (ATTACKER, "account-locked"),
        (ATTACKER, "account-locked"),
        (ATTACKER, "throttled"),
    ]
    assert f"login refused: client={owner} service=imap " in events.text()
    text, js = write_logs(events, tmp_path)
    assert banned(text) == [ATTACKER] * 4
    assert banned(js) == [ATTACKER] * 4


def test_every_line_is_one_event(srv: RunningServer) -> None:
    """No client-chosen value makes a line break in either format."""
    with captured() as events:
        imap_login(srv, "a\r\nb\x1b[31m\u2028c", "wrong", ATTACKER)
        with smtplib.SMTP("127.0.0.1", srv.port("submission")) as s:
            s.starttls(context=client_tls())
            s.ehlo("h\x1b]0;title\x07")
            s.docmd("MAIL", "FROM:<\x1b[31mred@x.test>")
            s.docmd("QUIT")
        (login,) = events.wait("login", 1)
        (txn,) = events.wait("smtp.transaction", 1)
    assert login["user"] == "a\\r\\nb\\x1b[31m\\u2028c"
    assert txn["helo"] == "h\\x1b]0;title\\x07"
    lines = [li for li in events.text().splitlines() if "ourmail.logs#" in li]
    assert len(lines) == 2 and all("\x1b" not in li for li in lines)


def test_a_continuation_line_never_matches(tmp_path: Path) -> None:
    """twistd writes a message's further lines after a tab: one that looks like a failed login
    (a traceback quoting a name, a message with a line break) is not counted."""
    bait = 'login failed: client=6.6.6.6 service=imap user="a" mechanism=LOGIN result=x'
    real = f'login failed: client={ATTACKER} service=imap user="a" mechanism=LOGIN result=x'
    lines = [
        {"log_format": "{t}", "t": f"oops\n[ourmail.logs#info] {bait}", "log_namespace": "x"},
        {"log_format": "{t}", "t": real, "log_namespace": "ourmail.logs"},
    ]
    log = tmp_path / "twistd.log"
    log.write_text(
        "".join(
            formatEventAsClassicLogText({**e, "log_level": LogLevel.info, "log_time": 1.8e9}) or ""
            for e in lines
        )
    )
    assert "\n\t[ourmail.logs#info] login failed: client=6.6.6.6 " in log.read_text()
    assert banned(log) == [ATTACKER]


def test_the_jail_names_the_filter() -> None:
    jail = JAIL.read_text()
    assert "filter   = ourmail" in jail and "enabled  = false" in jail
