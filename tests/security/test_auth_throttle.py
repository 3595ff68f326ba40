"""Password guessing (issue 7 point 7): failed logins over IMAP, POP3 and SMTP AUTH lock the
account out for a short time (but not for the owner's known address) and the client out after
more; lockouts are logged; no password, nor its base64, ever reaches the log."""

from __future__ import annotations

import base64
import poplib
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls, running_server
from twisted.logger import formatEvent, globalLogPublisher

from ourmail.config import ThrottleSettings

WRONG = "Sekrit-Wrong-Guess-42"


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict) -> None:  # type: ignore[type-arg]
        lines.append(formatEvent(event) + repr(event.get("log_failure", "")))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    throttle = ThrottleSettings(
        base_delay=0.01, max_delay=0.05, account_limit=3, account_lockout=60, client_limit=8
    )
    with running_server(tmp_path, auth_throttle=throttle) as server:
        yield server


def imap_login(
    srv: RunningServer, password: str, source: str = "127.0.0.1", user: str | None = None
) -> bytes:
    """A LOGIN over IMAPS from the loopback address ``source``; the tagged reply."""
    sock = socket.create_connection(("127.0.0.1", srv.port("imaps")), source_address=(source, 0))
    with client_tls().wrap_socket(sock) as tls:
        f = tls.makefile("rb")
        f.readline()
        tls.sendall(f'a LOGIN {user or srv.user} "{password}"\r\n'.encode())
        while not (line := f.readline()).startswith(b"a "):
            pass
        return line


def test_account_lockout_spares_the_owners_address(srv: RunningServer, logged: list[str]) -> None:
    assert b"a OK" in imap_login(srv, srv.password, "127.0.0.1")  # the owner, earlier
    for _ in range(3):
        assert b"AUTHENTICATIONFAILED" in imap_login(srv, WRONG, "127.0.0.2")
    # Locked: even the right password fails from a new address ...
    assert b"AUTHENTICATIONFAILED" in imap_login(srv, srv.password, "127.0.0.3")
    # ... but not from the owner's.
    assert b"a OK" in imap_login(srv, srv.password, "127.0.0.1")
    assert any("account locked out after repeated failed logins" in x for x in logged)


def test_client_lockout_covers_every_protocol(srv: RunningServer, logged: list[str]) -> None:
    for n in range(8):  # a different account each time: no account lockout
        imap_login(srv, WRONG, "127.0.0.5", f"user{n}@example.test")
    assert any("client locked out" in x and "127.0.0.5" in x for x in logged)
    assert b"AUTHENTICATIONFAILED" in imap_login(srv, srv.password, "127.0.0.5")
    assert b"a OK" in imap_login(srv, srv.password, "127.0.0.6")  # others are unaffected


def test_no_password_in_the_log(srv: RunningServer, logged: list[str]) -> None:
    imap_login(srv, WRONG)
    with smtplib.SMTP("127.0.0.1", srv.port("submission")) as s:
        s.starttls(context=client_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(srv.user, WRONG)
    p = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=client_tls())
    p.user(srv.user)
    with pytest.raises(poplib.error_proto):
        p.pass_(WRONG)
    p.close()
    encoded = base64.b64encode(f"\0{srv.user}\0{WRONG}".encode()).decode()
    text = "\n".join(logged)
    assert "login failed" in text
    assert WRONG not in text and encoded not in text and srv.password not in text
