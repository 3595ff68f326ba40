"""The greylist check (RFC 6647) through smtplib: first sight 450, an early retry 450, a retry
after the delay passes and allows the client's network; the state survives a restart and is
shared with another process opening the same database."""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, running_server

from ourmail.config import FilterSettings

DELAY = 1.0


def greylisting(**options: Any) -> FilterSettings:
    options = {"delay": DELAY, "skip_networks": []} | options
    return FilterSettings(chain=("greylist",), options={"greylist": options})


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path, filters=greylisting()) as server:
        yield server


def rcpt(server: RunningServer, sender: str, source: str = "127.0.0.2") -> tuple[int, bytes]:
    """MAIL FROM ``sender`` and RCPT TO the test user, from the loopback address ``source``."""
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), source_address=(source, 0)) as s:
        s.ehlo("client.test")
        assert s.mail(sender)[0] == 250
        return s.rcpt(server.user)


def test_first_sight_early_retry_and_retry_after_the_delay(srv: RunningServer) -> None:
    assert rcpt(srv, "bob@else.test") == (450, b"4.7.1 Greylisted, try again in 1 seconds")
    assert rcpt(srv, "bob@else.test")[0] == 450  # too early
    time.sleep(DELAY + 0.1)
    assert rcpt(srv, "bob@else.test")[0] == 250
    # The network is allowed now, for every sender and client address in its /24.
    assert rcpt(srv, "carol@other.test", source="127.0.0.200")[0] == 250
    assert rcpt(srv, "carol@other.test", source="127.0.1.2")[0] == 450  # another /24


def test_the_null_sender_is_greylisted_too(srv: RunningServer) -> None:
    assert rcpt(srv, "")[0] == 450
    time.sleep(DELAY + 0.1)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=("127.0.0.2", 0)) as s:
        s.sendmail("", [srv.user], b"Subject: bounce\r\n\r\nbounced\r\n")


def test_loopback_is_not_greylisted_by_default(tmp_path: Path) -> None:
    filters = FilterSettings(chain=("greylist",), options={"greylist": {"delay": 60}})
    with running_server(tmp_path, filters=filters) as server:
        assert rcpt(server, "bob@else.test", source="127.0.0.1")[0] == 250


def test_the_state_survives_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(tmp_path, filters=greylisting()) as server:
        assert rcpt(server, "bob@else.test")[0] == 450
    time.sleep(DELAY + 0.1)
    # Same data directory: the test user already exists there.
    monkeypatch.setattr(RunningServer, "add_user", lambda self, *args: None)
    with running_server(tmp_path, filters=greylisting()) as server:
        assert rcpt(server, "bob@else.test")[0] == 250


def test_another_process_shares_the_state(srv: RunningServer) -> None:
    assert rcpt(srv, "bob@else.test", source="127.0.3.1")[0] == 450
    database = srv.data / "filters" / "greylist" / "greylist.sqlite"
    time.sleep(DELAY + 0.1)
    # Another process (as another MX worker would) sees the triplet, and its retry passes...
    script = (
        "import sys, time; from pathlib import Path;"
        "from ourmail.filters.greylist import GreylistDB;"
        "db = GreylistDB(Path(sys.argv[1]), delay=1.0);"
        "print(db.decide('127.0.3.0/24', 'bob@else.test', sys.argv[2], time.time()).why)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(database), srv.user],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.strip() == "retried"
    # ...and the network it allowed is allowed here at once, for a sender never seen.
    assert rcpt(srv, "dave@new.test", source="127.0.3.9")[0] == 250
