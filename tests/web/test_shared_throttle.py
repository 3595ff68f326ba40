"""The webmail logs in through the same Authenticator as IMAP: failed web logins count for
IMAP logins of the same account and client, and the other way round (issue 16 point 2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, running_server
from webhelp import Browser, imap_login

from ourmail.config import ThrottleSettings

WRONG = "Sekrit-Wrong-Guess-42"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    throttle = ThrottleSettings(
        base_delay=0.01, max_delay=0.05, account_limit=3, account_lockout=60, client_limit=8
    )
    with running_server(tmp_path, auth_throttle=throttle) as server:
        yield server


def test_failed_web_logins_lock_the_account_for_imap(srv: RunningServer) -> None:
    for _ in range(3):
        assert Browser(srv, "127.0.0.2").login(srv.user, WRONG).status == 401
    # The account is locked: the right password fails over IMAP from a new address ...
    assert b"AUTHENTICATIONFAILED" in imap_login(srv, srv.password, "127.0.0.3")
    # ... and over the web.
    assert Browser(srv, "127.0.0.4").login(srv.user, srv.password).status == 401


def test_failed_imap_logins_lock_the_account_for_the_web(srv: RunningServer) -> None:
    for _ in range(3):
        assert b"AUTHENTICATIONFAILED" in imap_login(srv, WRONG, "127.0.0.2")
    assert Browser(srv, "127.0.0.3").login(srv.user, srv.password).status == 401


def test_a_client_locked_out_over_imap_is_locked_out_of_the_web(srv: RunningServer) -> None:
    for n in range(8):  # a different account each time: only the client is counted
        imap_login(srv, WRONG, "127.0.0.5", f"user{n}@example.test")
    assert Browser(srv, "127.0.0.5").login(srv.user, srv.password).status == 401
    assert Browser(srv, "127.0.0.6").login(srv.user, srv.password).status == 303
