"""Local groups and users' forwarding on a real server (issue 17 point 4): mail over SMTP to a
group reaches each member once (nested groups, a loop), a forwarded user's mail is queued to
the target with an SRS sender and kept or not, the ``ourmail`` commands and the console make
the same changes and both are audit-logged; a domain admin cannot touch another domain's
groups or users (forged POSTs: 403, logged, nothing changed); hostile input: 400."""

from __future__ import annotations

import json
import re
import smtplib
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, cli, client_tls, running_server
from twisted.internet.task import Clock
from webhelp import Browser, Response

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password
from ourmail.config import AdminSettings, QuotaLimit
from ourmail.directory.local import LocalDirectory

PASSWORD = "postmaster's own long password"
BOSS_PASSWORD = "the other domain's boss password"
#: Each browser's CSRF token, read once.
TOKENS: weakref.WeakKeyDictionary[Browser, str] = weakref.WeakKeyDictionary()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    admin = AdminSettings(
        admins=("postmaster@example.test",),
        domain_admins={"boss@other.test": ("other.test",)},
    )
    # The queue's clock stands still: what is queued stays there to be looked at.
    tmp = tmp_path_factory.mktemp("groups")
    with running_server(tmp, admin=admin, queue_clock=Clock()) as server:
        accounts = server.server.accounts
        accounts.set_password("postmaster@example.test", hash_password(PASSWORD))
        accounts.add_domain("other.test")
        for user in ("boss@other.test", "bob@other.test"):
            accounts.add_user(user, hash_password(BOSS_PASSWORD))
        for user in ("ann", "ben", "cat", "dan", "eve"):
            accounts.add_user(f"{user}@example.test", hash_password(BOSS_PASSWORD))
        yield server


def count(srv: RunningServer, address: str) -> int:
    folder = srv.server.store.user(address).folder("INBOX")
    folder.sync()
    return len(folder.uids())


def send(srv: RunningServer, rcpts: list[str], sender: str = "x@else.test") -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        assert s.sendmail(sender, rcpts, b"Subject: hi\r\n\r\nx\r\n") == {}


def queued(srv: RunningServer) -> dict[str, tuple[str, list[str]]]:
    """The queue: id -> (envelope sender, recipients)."""
    files = srv.server.queue.files
    envelopes = {qid: files.read(qid) for qid in files.ids()}
    return {q: (e.sender, [r.address for r in e.recipients]) for q, e in envelopes.items()}


def audit(srv: RunningServer) -> list[dict[str, Any]]:
    path = srv.data / "log" / "audit.log"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def browser(srv: RunningServer, address: str, password: str) -> Browser:
    b = Browser(srv)
    assert b.login(address, password).status == 303
    return b


def post(b: Browser, path: str, fields: dict[str, str], token: bool = True) -> Response:
    if token:
        if b not in TOKENS:
            m = re.search(r'data-csrf="([^"]+)"', b.get("/").text)
            assert m
            TOKENS[b] = m.group(1)
        fields = {"csrf": TOKENS[b], **fields}
    return b.post(path, fields)


def test_mail_to_nested_groups_reaches_each_member_once(
    srv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(srv, "group", "add", "Team@example.test", "ann", "ben", "--name", "The team") == 0
    assert cli(srv, "group", "add", "all@example.test", "team@example.test", "cat", "ann") == 0
    # A loop: the team lists "all", which lists the team.
    assert cli(srv, "group", "member-add", "team@example.test", "all@example.test") == 0
    assert cli(srv, "group", "member-add", "team@example.test", "far@remote.test") == 0
    assert cli(srv, "group", "show", "team@example.test") == 0
    shown = capsys.readouterr().out
    assert "team@example.test\tThe team" in shown and "\tfar@remote.test" in shown
    before = {u: count(srv, f"{u}@example.test") for u in ("ann", "ben", "cat", "dan")}
    waiting = set(queued(srv))
    send(srv, ["all@example.test", "team@example.test", "ann@example.test"])
    after = {u: count(srv, f"{u}@example.test") for u in ("ann", "ben", "cat", "dan")}
    assert {u: after[u] - before[u] for u in after} == {"ann": 1, "ben": 1, "cat": 1, "dan": 0}
    # The member elsewhere: queued once, with an SRS sender in the group's domain.
    new = [v for q, v in queued(srv).items() if q not in waiting]
    assert len(new) == 1 and new[0][1] == ["far@remote.test"]
    assert new[0][0].startswith("SRS0=") and new[0][0].endswith("@example.test")
    # Members may send as the group over submission: a direct member, not one of "all"'s
    # members who is not in the team itself.
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), context=client_tls()) as s:
        s.login("ben@example.test", BOSS_PASSWORD)
        assert s.mail("team@example.test")[0] == 250
        s.rset()
        assert s.mail("all@example.test")[0] == 553
    lines = [a for a in audit(srv) if a["action"].startswith("group.")]
    assert [(a["action"], a["via"], a["result"]) for a in lines[:2]] == [
        ("group.add", "cli", "ok"),
        ("group.add", "cli", "ok"),
    ]
    assert cli(srv, "group", "member-del", "team@example.test", "nobody@remote.test") == 1
    assert audit(srv)[-1]["result"] == "refused: no-such-member"


def test_a_forwarded_users_mail_is_queued_with_srs_and_kept_or_not(srv: RunningServer) -> None:
    assert cli(srv, "user", "forward", "dan", "--to", "dan@remote.test", "--no-keep") == 0
    assert cli(srv, "user", "forward", "dan", "--to", "dan@example.test") == 1
    assert audit(srv)[-1]["result"] == "refused: self-forward"
    before, waiting = count(srv, "dan@example.test"), set(queued(srv))
    send(srv, ["dan@example.test"])
    assert count(srv, "dan@example.test") == before  # no copy kept
    new = [v for q, v in queued(srv).items() if q not in waiting]
    assert len(new) == 1 and new[0][1] == ["dan@remote.test"]
    assert new[0][0].startswith("SRS0=") and new[0][0].endswith("=else.test=x@example.test")

    # The console keeps a copy from now on.
    pm = browser(srv, "postmaster@example.test", PASSWORD)
    page = pm.get("/admin/user?address=dan@example.test")
    assert "Forwarded to dan@remote.test" in page.text and "no copy is kept" in page.text
    saved = post(
        pm,
        "/admin/user/forward",
        {"address": "dan@example.test", "targets": "dan@remote.test", "keep": "on"},
    )
    assert saved.status == 303
    assert "The forwarding has been saved." in pm.get(saved.headers["location"]).text
    waiting = set(queued(srv))
    send(srv, ["dan@example.test"])
    assert count(srv, "dan@example.test") == before + 1
    assert [v[1] for q, v in queued(srv).items() if q not in waiting] == [["dan@remote.test"]]
    # A loop through another user is refused, on the page, and logged.
    assert cli(srv, "user", "forward", "eve", "--to", "dan@example.test", "--no-keep") == 0
    looped = post(pm, "/admin/user/forward", {"address": "dan@example.test", "targets": "eve"})
    assert looped.status == 400 and "would come back to dan@example.test" in looped.text
    assert audit(srv)[-1]["result"] == "refused: forward-loop"
    stopped = post(pm, "/admin/user/forward", {"address": "dan@example.test", "off": "on"})
    assert stopped.status == 303 and AccountDB(srv.data).forward("dan@example.test") is None
    forwards = [
        a
        for a in audit(srv)
        if a["action"] == "user.forward" and a["result"] == "ok" and a["via"] == "web"
    ]
    assert [(a["via"], a["detail"]) for a in forwards[-2:]] == [
        ("web", "to=dan@remote.test keep=yes"),
        ("web", "off"),
    ]
    assert cli(srv, "user", "forward", "eve", "--off") == 0


def test_the_console_manages_groups(srv: RunningServer) -> None:
    pm = browser(srv, "postmaster@example.test", PASSWORD)
    made = post(
        pm,
        "/admin/groups/add",
        {"address": "Board@example.test", "name": "Η διοίκηση", "members": "ann\ncat@example.test"},
    )
    assert made.status == 303
    listing = pm.get(made.headers["location"])
    assert "The group board@example.test has been created." in listing.text
    assert "Η διοίκηση" in listing.text
    added = post(
        pm,
        "/admin/group/members/add",
        {"address": "board@example.test", "members": "ben, x@far.test"},
    )
    assert (
        added.status == 303
        and "The members have been added." in pm.get(added.headers["location"]).text
    )
    removed = post(
        pm, "/admin/group/members/delete", {"address": "board@example.test", "member": "cat"}
    )
    assert removed.status == 303
    assert AccountDB(srv.data).group("board@example.test") == (
        "Η διοίκηση",
        ["ann@example.test", "ben@example.test", "x@far.test"],
    )
    before = count(srv, "ben@example.test")
    send(srv, ["board@example.test"])
    assert count(srv, "ben@example.test") == before + 1
    gone = post(pm, "/admin/groups/delete", {"address": "board@example.test"})
    assert gone.status == 303 and AccountDB(srv.data).group("board@example.test") is None
    web = [(a["action"], a["target"]) for a in audit(srv) if a["via"] == "web"][-4:]
    assert web == [
        ("group.add", "board@example.test"),
        ("group.member-add", "board@example.test"),
        ("group.member-del", "board@example.test"),
        ("group.del", "board@example.test"),
    ]


def test_a_domain_admin_cannot_touch_another_domain(srv: RunningServer) -> None:
    boss = browser(srv, "boss@other.test", BOSS_PASSWORD)
    assert boss.get("/admin/groups").status == 200
    db = AccountDB(srv.data)
    groups, forward = db.groups(), db.forward("ann@example.test")
    lines = len(audit(srv))
    forged = [
        boss.get("/admin/groups?domain=example.test"),
        boss.get("/admin/group?address=team@example.test"),
        post(boss, "/admin/groups/add", {"address": "new@example.test", "members": ""}),
        post(boss, "/admin/groups/delete", {"address": "team@example.test"}),
        post(
            boss,
            "/admin/group/members/add",
            {"address": "team@example.test", "members": "bob@other.test"},
        ),
        post(
            boss, "/admin/group/members/delete", {"address": "team@example.test", "member": "ann"}
        ),
        post(boss, "/admin/user/forward", {"address": "ann@example.test", "targets": "a@far.test"}),
        # Their own domain, but reaching into another local domain or an admin's account.
        post(boss, "/admin/groups/add", {"address": "g@other.test", "members": "ann@example.test"}),
        post(
            boss,
            "/admin/user/forward",
            {"address": "bob@other.test", "targets": "ann@example.test"},
        ),
        post(boss, "/admin/user/forward", {"address": "boss@other.test", "targets": "a@far.test"}),
    ]
    assert [r.status for r in forged] == [403] * len(forged)
    refused = audit(srv)[lines:]
    assert len(refused) == len(forged) and {a["result"] for a in refused} == {"forbidden"}
    assert db.groups() == groups and db.forward("ann@example.test") == forward
    assert db.forward("bob@other.test") is None and db.group("g@other.test") is None
    # In their own domain, with members of theirs and elsewhere: allowed.
    ok = post(
        boss,
        "/admin/groups/add",
        {"address": "desk@other.test", "members": "bob@other.test\na@far.test"},
    )
    assert ok.status == 303


def test_hostile_input_is_refused(srv: RunningServer) -> None:
    pm = browser(srv, "postmaster@example.test", PASSWORD)
    db = AccountDB(srv.data)
    groups = db.groups()
    for fields in (
        {"address": "x" * 400 + "@example.test"},
        {"address": "evil\r\n@example.test"},
        {"address": "<script>@example.test"},
        {"address": "g@example.test", "name": "two\nlines"},
        {"address": "g@example.test", "name": "n" * 500},
        {"address": "g@example.test", "members": "\n".join(f"m{i}@far.test" for i in range(101))},
        {"address": "g@example.test", "members": "bad\u202eaddress@far.test"},
        {"address": "g@example.test", "members": "nobody@example.test"},
        {"address": "ann@example.test"},
        {"address": "g@nowhere.test"},
    ):
        answer = post(pm, "/admin/groups/add", fields)
        assert answer.status == 400, fields
        assert "Traceback" not in answer.text
    assert post(pm, "/admin/groups/add", {"address": "g@example.test"}, token=False).status == 403
    for fields in (
        {"address": "ann@example.test", "targets": "\n".join(f"f{i}@far.test" for i in range(11))},
        {"address": "ann@example.test", "targets": "not an address"},
        {"address": "ann@example.test", "targets": "ann"},
        {"address": "nobody@example.test", "targets": "a@far.test"},
    ):
        assert post(pm, "/admin/user/forward", fields).status == 400, fields
    assert (
        post(
            pm, "/admin/group/members/add", {"address": "none@example.test", "members": "ann"}
        ).status
        == 400
    )
    assert db.groups() == groups and db.forward("ann@example.test") is None


def test_a_catch_all_does_not_make_every_address_look_taken(
    srv: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding: with a catch-all the console refused every new group ("exists": the catch-all
    answers for any address), and a domain admin every new alias; only the address itself
    counts.  And an address repeated at RCPT is answered without another look-up."""
    assert cli(srv, "alias", "add", "@other.test", "bob@other.test") == 0
    try:
        pm = browser(srv, "postmaster@example.test", PASSWORD)
        made = post(
            pm, "/admin/groups/add", {"address": "crew@other.test", "members": "bob@other.test"}
        )
        assert made.status == 303, made.text
        assert AccountDB(srv.data).group("crew@other.test") is not None
        boss = browser(srv, "boss@other.test", BOSS_PASSWORD)
        alias = post(
            boss, "/admin/aliases/add", {"address": "sales@other.test", "targets": "bob@other.test"}
        )
        assert alias.status == 303, alias.text
        taken = post(pm, "/admin/groups/add", {"address": "bob@other.test", "members": ""})
        assert taken.status == 400  # a user's own address is still taken
        looked: list[str] = []
        lookup = LocalDirectory.lookup
        monkeypatch.setattr(
            LocalDirectory,
            "lookup",
            lambda self, address: looked.append(address) or lookup(self, address),
        )
        send(srv, ["crew@other.test"] * 3)
        assert looked == ["crew@other.test"]
    finally:
        assert cli(srv, "alias", "del", "@other.test") == 0


def test_a_full_member_gets_no_copy_and_the_others_do(srv: RunningServer) -> None:
    """Finding: one full mailbox refused the mail for the whole group (452, or 552); now the
    member's quota is checked at delivery and only that copy is skipped."""
    accounts = srv.server.accounts
    accounts.add_group("pair@example.test", "", ["dan@example.test", "eve@example.test"])
    accounts.set_quota("dan@example.test", QuotaLimit(bytes=1))
    try:
        before = {u: count(srv, f"{u}@example.test") for u in ("dan", "eve")}
        send(srv, ["pair@example.test"])
        after = {u: count(srv, f"{u}@example.test") for u in ("dan", "eve")}
        assert {u: after[u] - before[u] for u in after} == {"dan": 0, "eve": 1}
    finally:
        accounts.set_quota("dan@example.test", None)
        accounts.delete_group("pair@example.test")


def test_user_del_names_the_groups_left_in_the_audit_log(
    srv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = srv.server.accounts
    accounts.add_user("gone@example.test", hash_password(BOSS_PASSWORD))
    accounts.add_group("club@example.test", "", ["gone@example.test", "ann@example.test"])
    try:
        assert cli(srv, "user", "del", "gone@example.test") == 0
        assert "removed from groups: club@example.test" in capsys.readouterr().out
        line = audit(srv)[-1]
        assert (line["action"], line["detail"]) == ("user.del", "left groups: club@example.test")
        assert AccountDB(srv.data).group("club@example.test") == ("", ["ann@example.test"])
    finally:
        accounts.delete_group("club@example.test")
