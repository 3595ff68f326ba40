"""``ourmail list`` end to end against a running server: create, set, add, show; the
server's table of lists follows, and an arrival for the list reaches its handler."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli, dns_zone, running_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.interfaces import ListArrival
from ourmail.lists.context import ListContext
from ourmail.lists.model import ListSettings

POST = b"From: alice@example.test\r\nSubject: hello\r\n\r\nhi all\r\n"


def test_lists_made_with_the_cli_are_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_server(tmp_path) as srv:
        lists = srv.server.lists
        assert lists is not None
        assert cli(srv, "list", "create", "team@example.test", "--owner", "alice") == 0
        assert cli(srv, "list", "set", "team@example.test", "max_size=1M", "digest=yes",
                   "post_policy=anyone", "subject_prefix=[team]") == 0  # fmt: skip
        assert cli(srv, "list", "add", "team@example.test", "bob@else.test", "Carol@Else.test") == 0
        assert cli(srv, "list", "show", "team@example.test") == 0
        out = capsys.readouterr().out
        assert "created the list team@example.test" in out
        assert "added 2 member(s)" in out
        for line in ("owners = alice@example.test", "max_size = 1048576", "digest = true",
                     "post_policy = anyone", "subject_prefix = [team]", "members: 2",
                     "held posts: 0"):  # fmt: skip
            assert f"\t{line}\n" in out
        # Refused with a clear message, and nothing changed.
        assert cli(srv, "list", "set", "team@example.test", "post_policy=everyone") == 1
        assert cli(srv, "list", "set", "team@example.test", "owners=") == 1
        assert cli(srv, "list", "create", "alice@example.test", "--owner", "alice") == 1
        assert cli(srv, "list", "create", "team@elsewhere.test", "--owner", "alice") == 1
        assert cli(srv, "list", "create", "team@example.test", "--owner", "alice") == 1
        assert cli(srv, "list", "create", "team-leave@example.test", "--owner", "alice") == 1
        err = capsys.readouterr().err
        assert "the list team@example.test answers at team-leave@example.test already" in err
        assert "post_policy: one of members, anyone, addresses, moderators" in err
        assert "at least one owner" in err and "alice@example.test is a user" in err
        assert "not a domain served here" in err and "exists already" in err
        audit = (srv.data / "log" / "audit.log").read_text()
        assert audit.count("list.create") == 5 and "list.member-add" in audit
        # The running server sees the new list at its next look at the change mark (its own
        # every few seconds, or this one).
        blockingCallFromThread(reactor, lists._watch)
        assert lists.handles("team@example.test") and lists.handles("team-join@example.test")
        # How members get the posts: a daily digest, nothing, each post again.
        assert cli(srv, "list", "mode", "team@example.test", "digest", "carol@else.test") == 0
        assert cli(srv, "list", "mode", "team@example.test", "none", "bob@else.test") == 0
        assert cli(srv, "list", "members", "team@example.test") == 0
        out = capsys.readouterr().out
        assert "carol@else.test\tdigest\t" in out and "bob@else.test\tnone (owner)\t" in out
        assert cli(srv, "list", "mode", "team@example.test", "each", "bob@else.test") == 0
        assert cli(srv, "list", "mode", "team@example.test", "each", "dave@else.test") == 1
        with pytest.raises(SystemExit):  # argparse: "invalid choice: 'weekly'"
            cli(srv, "list", "mode", "team@example.test", "weekly", "bob@else.test")
        assert "dave@else.test is not a member of team@example.test" in capsys.readouterr().err
        audit = (srv.data / "log" / "audit.log").read_text()
        assert audit.count("list.member-mode") == 4
        got: list[tuple[str, str, bytes]] = []

        async def post(ctx: ListContext, lst: ListSettings, arrival: ListArrival, path: Path):
            got.append((lst.subject_prefix, arrival.sender, path.read_bytes()))

        lists.handlers["post"] = post
        arrival = ListArrival("team@example.test", "alice@example.test", "127.0.0.1", id="t1")
        blockingCallFromThread(reactor, lists.accept, arrival, POST)
        blockingCallFromThread(reactor, lists.drained)
        assert got == [("[team]", "alice@example.test", POST)]
        assert cli(srv, "list", "delete", "team@example.test") == 0
        blockingCallFromThread(reactor, lists._watch)
        assert not lists.handles("team@example.test")
        # The context service.py built: the secret, the web address, DMARC policy lookups.
        secret = srv.data / "lists" / "secret"
        assert len(lists.ctx.secret) == 32 and lists.ctx.secret == secret.read_bytes()
        assert secret.stat().st_mode & 0o777 == 0o600
        # As the set-up wizard's address: the configured port, none here (tcp:0).
        assert lists.ctx.web_url == "https://mail.example.test"
        zone = dns_zone()[0]
        zone.set_txt("_dmarc.strict.test", "v=DMARC1; p=reject")
        policy = lists.ctx.dmarc_policy
        assert policy is not None
        assert blockingCallFromThread(reactor, policy, "mail.strict.test") == "reject"
        assert blockingCallFromThread(reactor, policy, "lax.test") is None
