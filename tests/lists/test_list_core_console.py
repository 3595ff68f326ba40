"""The console's list pages over plain HTTP(S): the lists, one list's settings, members and
held posts (approve through the moderation part, a fake here); a domain admin sees only
their domains' lists; forged and hostile requests change nothing."""

from __future__ import annotations

import contextlib
import json
import re
import smtplib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, cli, running_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from webhelp import Browser, Response

from ourmail.auth.passwords import hash_password
from ourmail.config import AdminSettings
from ourmail.lists.listdb import Held
from ourmail.lists.model import Member

PASSWORD = "postmaster's own long password"


def post(b: Browser, path: str, fields: dict[str, str]) -> Response:
    m = re.search(r'data-csrf="([^"]+)"', b.get("/").text)
    assert m
    return b.post(path, {"csrf": m.group(1), **fields})


#: boss@other.test administers the domain other.test only.
BOSS = {"boss@other.test": ("other.test",)}
#: The postmaster administers everything; the boss their domain.
ADMINS = AdminSettings(admins=("postmaster@example.test",), domain_admins=BOSS)


@contextlib.contextmanager
def console_server(tmp_path: Path, admin: AdminSettings) -> Iterator[RunningServer]:
    """A server with ``admin`` and the domain other.test with its admin boss@other.test (and
    the postmaster's password set when the postmaster is an admin)."""
    with running_server(tmp_path, admin=admin) as srv:
        accounts = srv.server.accounts
        accounts.add_domain("other.test")
        if "postmaster@example.test" in admin.admins:
            accounts.set_password("postmaster@example.test", hash_password(PASSWORD))
        accounts.add_user("boss@other.test", hash_password(PASSWORD))
        yield srv


def browser(srv: RunningServer, address: str) -> Browser:
    b = Browser(srv)
    assert b.login(address, PASSWORD).status == 303
    return b


def test_the_console_runs_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    approved: list[tuple[str, str, str]] = []

    async def approve(ctx: Any, lst: Any, held_id: str, by: str) -> bool:
        approved.append((lst.address, held_id, by))
        return await ctx.run(ctx.db.release, lst.address, held_id) is not None

    fake = types.ModuleType("ourmail.lists.moderation")
    fake.approve = approve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ourmail.lists.moderation", fake)
    with console_server(tmp_path, ADMINS) as srv:
        assert cli(srv, "list", "create", "team@example.test", "--owner", "alice") == 0
        assert cli(srv, "list", "add", "team@example.test", "zed@else.test") == 0
        ctx = srv.server.lists.ctx  # type: ignore[union-attr]
        ctx.db.hold(Held("team@example.test", "h1", "x@else.test", "Buy now", "not a member",
                         123, 1.0, 9e9))  # fmt: skip
        pm = browser(srv, "postmaster@example.test")
        page = pm.get("/admin/lists")
        assert page.status == 200 and "team@example.test" in page.text
        page = pm.get("/admin/list?address=team%40example.test")
        assert page.status == 200 and "zed@else.test" in page.text and "Buy now" in page.text
        # Settings: every field is in the form; a change is saved and audit-logged.
        form = {"address": "team@example.test", "owners": "alice@example.test\nann@else.test",
                "post_policy": "anyone", "max_size": "1M", "digest": "on",
                "subject_prefix": "[team]"}  # fmt: skip
        done = post(pm, "/admin/list/settings", form)
        assert done.status == 303 and b"done=settings" in done.headers["location"].encode()
        lst = ctx.db.get("team@example.test")
        assert lst.owners == ("alice@example.test", "ann@else.test") and lst.digest
        assert lst.max_size == 1024 * 1024 and lst.subject_prefix == "[team]"
        refused = post(pm, "/admin/list/settings", {**form, "post_policy": "everyone"})
        assert refused.status == 400 and "post_policy" in refused.text
        assert ctx.db.get("team@example.test").post_policy.value == "anyone"
        # Members added and removed.
        add = {"address": "team@example.test", "members": "a@else.test\nB@Else.test"}
        assert post(pm, "/admin/list/members/add", add).status == 303
        gone = {"address": "team@example.test", "member": "zed@else.test"}
        assert post(pm, "/admin/list/members/delete", gone).status == 303
        members = [m.address for m in ctx.db.members("team@example.test")]
        assert members == ["a@else.test", "b@else.test"]
        # A held post approved through the moderation part.
        held = {"address": "team@example.test", "held": "h1"}
        assert post(pm, "/admin/list/held/approve", held).status == 303
        assert approved == [("team@example.test", "h1", "postmaster@example.test")]
        assert post(pm, "/admin/list/held/approve", held).status == 400  # gone now
        assert post(pm, "/admin/list/held/approve", {**held, "held": "../x"}).status == 400
        # Without the CSRF token: refused, nothing changed.
        assert pm.post("/admin/list/members/add", add | {"members": "c@else.test"}).status == 403
        # A domain admin sees only their domains' lists, and cannot touch the others.
        boss = browser(srv, "boss@other.test")
        assert "team@example.test" not in boss.get("/admin/lists").text
        assert boss.get("/admin/list?address=team%40example.test").status == 403
        assert post(boss, "/admin/list/members/add", add | {"members": "c@else.test"}).status == 403
        assert len(ctx.db.members("team@example.test")) == 2
        # The change of settings reached the running table (and the mark for other processes).
        blockingCallFromThread(reactor, srv.server.lists.drained)  # type: ignore[union-attr]
        lines = [json.loads(x) for x in (srv.data / "log" / "audit.log").read_text().splitlines()]
        done_actions = [(a["action"], a["result"]) for a in lines if a["via"] == "web"]
        assert ("list.set", "ok") in done_actions and ("list.member-add", "ok") in done_actions
        assert ("list.held-approve", "ok") in done_actions
        assert ("list.member-add", "forbidden") in done_actions


def test_console_limits_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A domain admin's list names no address of another local domain; a moderation that
    fails shows a clear page and leaves its audit line, as each decision does; members are
    read a page at a time; codes are shown in the reader's language."""

    async def approve(ctx: Any, lst: Any, held_id: str, by: str) -> bool:
        raise RuntimeError("the spool is gone")

    async def reject(ctx: Any, lst: Any, held_id: str, by: str, reason: str) -> bool:
        return await ctx.run(ctx.db.release, lst.address, held_id) is not None

    fake = types.ModuleType("ourmail.lists.moderation")
    fake.approve, fake.reject = approve, reject  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ourmail.lists.moderation", fake)
    with console_server(tmp_path, AdminSettings(domain_admins=BOSS)) as srv:
        club = "club@other.test"
        assert cli(srv, "list", "create", club, "--owner", "boss@other.test") == 0
        ctx = srv.server.lists.ctx  # type: ignore[union-attr]
        boss = browser(srv, "boss@other.test")
        # Another local domain: refused (403), nothing changed; elsewhere and their own: fine.
        form = {"address": club, "owners": "boss@other.test"}
        for key, value in (("owners", "x@example.test"), ("moderators", "x@example.test"),
                           ("posters", "x@example.test"), ("group", "staff@example.test")):  # fmt: skip
            assert post(boss, "/admin/list/settings", form | {key: value}).status == 403, key
        assert ctx.db.get(club).owners == ("boss@other.test",)
        assert post(boss, "/admin/list/settings", form | {"owners": "x@far.test"}).status == 303
        add = {"address": club, "members": "u@example.test"}
        assert post(boss, "/admin/list/members/add", add).status == 403
        assert ctx.db.count(club) == 0
        assert post(boss, "/admin/list/members/add", add | {"members": "u@far.test"}).status == 303
        # Members a page at a time, from the database (never the whole list).
        ctx.db.subscribe(club, [Member(f"m{n:03}@far.test") for n in range(120)])

        def whole(*args: Any) -> None:
            raise AssertionError("the whole list was read")

        monkeypatch.setattr(ctx.db, "members", whole)
        page = boss.get(f"/admin/list?address={club}&page=3").text
        assert "m100@far.test" in page and "u@far.test" in page and "m099@far.test" not in page
        # A failed approval: a clear page and its audit line; a rejection is audited too.
        for n in (1, 2):
            ctx.db.hold(Held(club, f"h{n}", "x@else.test", "Hi", "non-member", 9, 1.0, 9e9))
        greek = boss.request("GET", f"/admin/list?address={club}", None, {"Accept-Language": "el"})
        assert "δεν είναι μέλος" in greek.text and "κάθε μήνυμα" in greek.text
        failed = post(boss, "/admin/list/held/approve", {"address": club, "held": "h1"})
        assert failed.status == 500 and "could not be approved" in failed.text
        assert post(boss, "/admin/list/held/reject", {"address": club, "held": "h2"}).status == 303
        lines = [json.loads(x) for x in (srv.data / "log" / "audit.log").read_text().splitlines()]
        decided = [(a["action"], a["target"], a["result"]) for a in lines if a["via"] == "web"]
        assert ("list.held-approve", f"{club} h1", "failed: RuntimeError") in decided
        assert ("list.held-reject", f"{club} h2", "ok") in decided
        assert ("list.set", "x@example.test", "forbidden") in decided


def rcpt(srv: RunningServer, address: str) -> int:
    """The SMTP server's answer to ``RCPT TO:<address>``."""
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("else.test")
        s.mail("bob@else.test")
        return s.rcpt(address)[0]


def audit_lines(srv: RunningServer) -> list[tuple[str, str, str]]:
    lines = [json.loads(x) for x in (srv.data / "log" / "audit.log").read_text().splitlines()]
    return [(a["action"], a["target"], a["result"]) for a in lines if a["via"] == "web"]


def test_the_console_creates_and_deletes_lists(tmp_path: Path) -> None:
    """A list made in the console takes mail at once; the CLI's checks refuse the same
    addresses; a domain admin makes lists in their domains only; deleting asks for a ticked
    box and removes the members and confirmations, and the address takes no more mail."""
    with console_server(tmp_path, ADMINS) as srv:
        srv.server.accounts.add_user("bob-join@example.test", hash_password(PASSWORD))
        ctx = srv.server.lists.ctx  # type: ignore[union-attr]
        pm = browser(srv, "postmaster@example.test")
        page = pm.get("/admin/lists")
        assert 'for="list-address"' in page.text and 'action="/admin/lists/add"' in page.text
        assert rcpt(srv, "team@example.test") == 550
        new = {
            "address": "Team@Example.test",
            "owners": "alice@example.test\nann@else.test",
            "name": "Team",
        }
        # Without the CSRF token: refused, nothing made.
        assert pm.post("/admin/lists/add", new).status == 403
        assert ctx.db.get("team@example.test") is None
        done = post(pm, "/admin/lists/add", new)
        assert done.status == 303
        assert "done=created" in done.headers["location"]
        lst = ctx.db.get("team@example.test")
        assert lst.owners == ("alice@example.test", "ann@else.test") and lst.display_name == "Team"
        assert rcpt(srv, "team@example.test") == 250  # at once, no refresh waited for
        assert rcpt(srv, "team-request@example.test") == 250
        assert (
            "takes mail now" in pm.get("/admin/list?address=team%40example.test&done=created").text
        )
        assert (
            post(pm, "/admin/lists/add", new | {"address": "crew-join@example.test"}).status == 303
        )
        # Refused with a clear error, nothing made: as `ourmail list create` refuses them.
        refusals = {
            "not an address": ({"address": "not an address"}, "not a valid address"),
            "not served": ({"address": "x@nowhere.test"}, "not a domain served here"),
            "the same list": ({"address": "team@example.test"}, "already exists"),
            "a command address": ({"address": "team-join@example.test"}, "answers at one of"),
            "a list at a command address": ({"address": "crew@example.test"}, "crew-join@"),
            "a user": ({"address": "alice@example.test"}, "already exists"),
            "a user at a command address": ({"address": "bob@example.test"}, "bob-join"),
            "no owner": ({"address": "x@example.test", "owners": ""}, "at least one address"),
            "a bad group": ({"address": "x@example.test", "group": "@@"}, "group"),
        }
        for why, (fields, text) in refusals.items():
            refused = post(pm, "/admin/lists/add", new | fields)
            assert refused.status == 400 and text in refused.text, why
            assert 'role="alert"' in refused.text, why
        assert [x.address for x in ctx.db.lists()] == [
            "crew-join@example.test",
            "team@example.test",
        ]
        # A domain admin: in their domains only (403, logged), owners not of another local one.
        boss = browser(srv, "boss@other.test")
        club = {"address": "club@other.test", "owners": "boss@other.test"}
        assert post(boss, "/admin/lists/add", club | {"address": "club@example.test"}).status == 403
        assert post(boss, "/admin/lists/add", club | {"owners": "x@example.test"}).status == 403
        assert post(boss, "/admin/lists/add", club).status == 303
        made = [x.address for x in ctx.db.lists()]
        assert made == ["club@other.test", "crew-join@example.test", "team@example.test"]
        # Delete: without the ticked box nothing is done; with it the list and its members go.
        ctx.db.subscribe("team@example.test", [Member("m@else.test")])
        gone = {"address": "team@example.test"}
        unconfirmed = post(pm, "/admin/list/delete", gone)
        assert unconfirmed.status == 400 and "Tick the box" in unconfirmed.text
        assert ctx.db.get("team@example.test") is not None
        assert pm.post("/admin/list/delete", gone | {"confirm": "yes"}).status == 403  # no CSRF
        assert post(boss, "/admin/list/delete", gone | {"confirm": "yes"}).status == 403
        assert "archive is kept" in pm.get("/admin/list?address=team%40example.test").text
        deleted = post(pm, "/admin/list/delete", gone | {"confirm": "yes"})
        assert deleted.status == 303 and "done=list-deleted" in deleted.headers["location"]
        assert ctx.db.get("team@example.test") is None
        assert ctx.db.members("team@example.test") == []
        assert "has been deleted" in pm.get(deleted.headers["location"]).text
        assert rcpt(srv, "team@example.test") == 550
        assert post(pm, "/admin/list/delete", gone | {"confirm": "yes"}).status == 400
        decided = audit_lines(srv)
        assert ("list.create", "team@example.test", "ok") in decided
        assert ("list.create", "club@other.test", "ok") in decided
        assert ("list.create", "bob-join@example.test", "refused: exists") in decided
        assert ("list.create", "x@nowhere.test", "refused: not-served") in decided
        assert ("list.create", "club@example.test", "forbidden") in decided
        assert ("list.delete", "team@example.test", "refused: not-confirmed") in decided
        assert ("list.delete", "team@example.test", "ok") in decided
        assert ("list.delete", "team@example.test", "forbidden") in decided
