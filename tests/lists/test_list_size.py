"""The issue's abuse case "a 50 MB post (refused by size)", against a running server with a
real list: ``[lists] max_post`` refuses at RCPT when the client announces the size (RFC 1870)
and at the end of DATA when it does not, for the whole transaction, before anything is kept."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, cli, running_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.config import ConfigError, load_settings

TEAM = "team@example.test"
#: 50 MB (not MiB): under the server's own 50 MiB limit, over the lists' 10 MiB.
BIG = 50_000_000


def big_post() -> bytes:
    head = f"From: bob@else.test\r\nTo: {TEAM}\r\nSubject: the whole archive\r\n\r\n".encode()
    line = b"x" * 998 + b"\r\n"
    return head + line * (BIG // len(line) + 1)


def kept(srv: RunningServer) -> list[Path]:
    """What the list manager and the user's mailbox hold."""
    spool = srv.data / "lists" / "spool"
    inbox = srv.server.store.shards.user_dir(srv.user)
    roots = [spool, inbox / "new", inbox / "cur"]
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("size")) as running:
        assert cli(running, "list", "create", TEAM, "--owner", running.user) == 0
        lists = running.server.lists
        assert lists is not None
        blockingCallFromThread(reactor, lists._watch)
        assert lists.handles(TEAM)
        yield running


def test_a_50_mb_post_announced_with_size_is_refused_at_rcpt(srv: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("else.test")
        assert s.mail("bob@else.test", [f"SIZE={BIG}"])[0] == 250
        code, text = s.rcpt(TEAM.upper())
        assert (code, text[:5]) == (552, b"5.3.4") and b"too big for the list" in text
        assert s.rcpt(srv.user)[0] == 250  # the user's own mailbox may take it


def test_a_50_mb_post_without_size_is_refused_whole_at_the_end_of_data(
    srv: RunningServer,
) -> None:
    before = kept(srv)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("else.test")
        assert s.mail("bob@else.test")[0] == 250  # no SIZE: the size is known at the end
        assert s.rcpt(TEAM)[0] == 250
        assert s.rcpt(srv.user)[0] == 250
        code, text = s.data(big_post())
        # 5xx, not 451: the client returns the mail instead of trying again for days.
        assert (code, text[:5]) == (552, b"5.3.4"), (code, text)
        # The session goes on: a small post afterwards is taken.
        assert s.sendmail("bob@else.test", [TEAM], b"Subject: small\r\n\r\nhi\r\n") == {}
    # Nothing of the big one was kept, neither for the list nor for the mailbox.
    assert all(p.stat().st_size < 1_000_000 for p in kept(srv) if p not in before)


def test_max_post_is_a_setting_with_bounds(tmp_path: Path) -> None:
    config = tmp_path / "ourmail.toml"
    config.write_text("[lists]\nmax_post = 100\n")
    with pytest.raises(ConfigError, match=r"'lists\.max_post' must be between"):
        load_settings(config=str(config), data=str(tmp_path / "data"))
    config.write_text("[lists]\nmax_post = 20000000\n")
    settings = load_settings(config=str(config), data=str(tmp_path / "data"))
    assert settings.lists.max_post == 20_000_000
