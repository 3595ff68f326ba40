"""The admin console's operations pages on a real server (issue 17 point 4): the outbound queue
(a message to an unreachable host is listed; hold, release, retry and delete act on the queue
file through the code of ``ourmail queue`` and are audit-logged, CLI changes too), the filter
log (a refusal of a message sent to the server is shown, to a domain admin only for their
domains) and shard placement (as ``ourmail shard list`` reports it).  A domain admin and a
plain user get 403 on every queue and shard URL, GET and POST, forged ones too; hostile ids
are answered 400 with nothing touched."""

from __future__ import annotations

import html
import json
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from conftest import RunningServer, dns_zone, running_server
from queuehelp import submit
from webhelp import Browser, Response

from ourmail.admin import cli
from ourmail.auth.passwords import hash_password
from ourmail.config import AdminSettings, FilterSettings
from ourmail.queue.files import QueueFiles
from ourmail.store import shardmove

T = TypeVar("T")
POSTMASTER_PASSWORD = "postmaster's own long password"
BOSS_PASSWORD = "the other domain's boss password"
CHECK = "filtercheck:factory"
UNREACHABLE = "unreachable-ops.test"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    zone, _ = dns_zone()
    zone.set_mx(UNREACHABLE, [(10, f"mx.{UNREACHABLE}")])
    zone.set_address(f"mx.{UNREACHABLE}", "127.0.0.9")  # nothing listens there
    admin = AdminSettings(
        admins=("postmaster@example.test",),
        domain_admins={"boss@other.test": ("other.test",)},
    )
    # Every recipient over MX is refused at RCPT: the filter log's entries.
    filters = FilterSettings(
        chain=(CHECK,), options={CHECK: {"at": "rcpt", "action": "reject", "reason": "no thanks"}}
    )
    with running_server(tmp_path_factory.mktemp("ops"), admin=admin, filters=filters) as server:
        accounts = server.server.accounts
        accounts.set_password("postmaster@example.test", hash_password(POSTMASTER_PASSWORD))
        accounts.add_domain("other.test")
        accounts.add_user("boss@other.test", hash_password(BOSS_PASSWORD))
        accounts.add_user("bob@other.test", hash_password(BOSS_PASSWORD))
        yield server


def wait_for(check: Callable[[], T], seconds: float = 15) -> T:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("not in time")


def as_user(srv: RunningServer, address: str, password: str) -> Browser:
    browser = Browser(srv)
    assert browser.login(address, password).status == 303
    _tokens.pop(id(browser), None)  # a new browser may reuse a freed one's id
    return browser


_tokens: dict[int, str] = {}


def csrf(browser: Browser) -> str:
    """The session's CSRF token (read once per browser: it lasts as long as the session)."""
    if id(browser) not in _tokens:
        m = re.search(r'data-csrf="([^"]+)"', browser.get("/").text)
        assert m
        _tokens[id(browser)] = m.group(1)
    return _tokens[id(browser)]


def post(
    browser: Browser, path: str, fields: list[tuple[str, str]], token: bool = True
) -> Response:
    sent = [("csrf", csrf(browser)), *fields] if token else fields
    return browser.request(
        "POST",
        path,
        urlencode(sent).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


def audit(srv: RunningServer) -> list[dict[str, Any]]:
    path = srv.data / "log" / "audit.log"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def files(srv: RunningServer) -> QueueFiles:
    return QueueFiles(srv.data / "queue")


def cli_out(srv: RunningServer, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert cli.main([*args, "--data", str(srv.data)]) == 0
    return capsys.readouterr().out


def settled(srv: RunningServer, qid: str) -> tuple[bool, float]:
    """What an admin's change would alter, once the first attempt is over (the runner's
    own attempts change the envelope otherwise)."""
    envelope = wait_for(lambda: (e := files(srv).read(qid)).attempts and e)
    return envelope.held, envelope.next_attempt


def queue_one(srv: RunningServer, rcpt: str) -> str:
    before = set(files(srv).ids())
    assert (
        submit(
            srv,
            [rcpt],
            b"Subject: stuck\r\nX-Hostile: <script>alert(1)</script>\r\n\r\nsecret body\r\n",
        )
        == {}
    )
    return wait_for(lambda: (set(files(srv).ids()) - before or {""}).pop())


def test_the_queue_is_listed_and_steered(
    srv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    first = queue_one(srv, f"dan@{UNREACHABLE}")
    second = queue_one(srv, f"eve@{UNREACHABLE}")
    browser = as_user(srv, "postmaster@example.test", POSTMASTER_PASSWORD)

    page = browser.get("/admin/queue")
    assert page.status == 200
    assert first in page.text and second in page.text
    assert f"dan@{UNREACHABLE}" in page.text and "alice@example.test" in page.text
    assert "2 messages match." in page.text
    found = browser.get("/admin/queue?" + urlencode({"q": "EVE@unreachable"}))
    assert second in found.text and first not in found.text

    # The message page: envelope and header, escaped; never the body.
    shown = browser.get("/admin/queue/message?" + urlencode({"id": first}))
    assert shown.status == 200
    assert f"dan@{UNREACHABLE}" in shown.text and "Subject: stuck" in shown.text
    assert "<script>alert(1)" not in shown.text and "&lt;script&gt;" in shown.text
    assert "secret body" not in shown.text

    # Hold both (selected together), as the queue file and `ourmail queue list` then say.
    held = post(browser, "/admin/queue/change", [("action", "hold"), ("id", first), ("id", second)])
    assert held.status == 303
    assert "2 messages are held." in browser.get(held.headers["location"]).text
    assert files(srv).read(first).held and files(srv).read(second).held
    listing = cli_out(srv, capsys, "queue", "list")
    assert f"{first}" in listing and listing.count("held") == 2

    # Release one; retry the other (held, it stays held).
    assert (
        post(browser, "/admin/queue/change", [("action", "release"), ("id", first)]).status == 303
    )
    assert not files(srv).read(first).held
    assert post(browser, "/admin/queue/change", [("action", "retry"), ("id", second)]).status == 303
    assert files(srv).read(second).held and files(srv).read(second).next_attempt == 0.0

    # Delete: first a confirmation, and nothing is removed until it is given.
    asked = post(browser, "/admin/queue/change", [("action", "delete"), ("id", second)])
    assert asked.status == 200 and "Delete queued messages?" in asked.text
    assert second in files(srv).ids()
    deleted = post(
        browser,
        "/admin/queue/change",
        [("action", "delete"), ("confirm", "yes"), ("id", second)],
    )
    assert deleted.status == 303
    assert second not in files(srv).ids() and second not in cli_out(srv, capsys, "queue", "list")
    gone = post(
        browser, "/admin/queue/change", [("action", "delete"), ("confirm", "yes"), ("id", second)]
    )
    assert "1 were no longer in the queue." in browser.get(gone.headers["location"]).text

    # The CLI's changes go through the same code and into the same log.
    cli_out(srv, capsys, "queue", "hold", first)
    assert files(srv).read(first).held
    lines = [(e["who"], e["via"], e["action"], e["target"], e["result"]) for e in audit(srv)]
    web = ("postmaster@example.test", "web")
    assert (*web, "queue.hold", first, "ok") in lines
    assert (*web, "queue.hold", second, "ok") in lines
    assert (*web, "queue.release", first, "ok") in lines
    assert (*web, "queue.retry", second, "ok") in lines
    assert (*web, "queue.delete", second, "ok") in lines
    assert (*web, "queue.delete", second, "refused: no-such-message") in lines
    assert [e for e in audit(srv) if e["via"] == "cli"][-1]["action"] == "queue.hold"
    assert all(e["client"] == "127.0.0.1" for e in audit(srv) if e["via"] == "web")


def test_hostile_ids_and_forms_change_nothing(srv: RunningServer) -> None:
    qid = queue_one(srv, f"fred@{UNREACHABLE}")
    before = settled(srv, qid)
    browser = as_user(srv, "postmaster@example.test", POSTMASTER_PASSWORD)
    for hostile in ("../../etc/passwd", "a" * 65, "ab\x00cd", qid + "/", "", "Ωmega"):
        assert browser.get("/admin/queue/message?" + urlencode({"id": hostile})).status == 400
        changed = post(browser, "/admin/queue/change", [("action", "hold"), ("id", hostile)])
        assert changed.status == 400, hostile
    too_many = [("action", "hold"), *(("id", f"{qid}{n}") for n in range(51))]
    assert post(browser, "/admin/queue/change", too_many).status == 400
    assert post(browser, "/admin/queue/change", [("action", "burn"), ("id", qid)]).status == 400
    # Without the CSRF token: 403.
    forged = post(browser, "/admin/queue/change", [("action", "hold"), ("id", qid)], token=False)
    assert forged.status == 403
    assert settled(srv, qid) == before
    assert browser.get("/admin/queue?" + urlencode({"q": "a\r\nb"})).status == 400
    assert browser.get("/admin/filters?action=explode").status == 400
    assert browser.get("/admin/queue/message?id=0000000000000000000").status == 404


def test_domain_admins_and_users_are_refused(srv: RunningServer) -> None:
    qid = queue_one(srv, f"gus@{UNREACHABLE}")
    before = settled(srv, qid)
    boss = as_user(srv, "boss@other.test", BOSS_PASSWORD)
    alice = as_user(srv, srv.user, srv.password)
    for browser, who in ((boss, "boss@other.test"), (alice, srv.user)):
        for path in ("/admin/queue", f"/admin/queue/message?id={qid}", "/admin/shards"):
            assert browser.get(path).status == 403, (who, path)
        for action in ("hold", "delete"):
            fields = [("action", action), ("id", qid), ("confirm", "yes")]
            assert post(browser, "/admin/queue/change", fields).status == 403
            assert post(browser, "/admin/queue/change", fields, token=False).status == 403
        refused = [e for e in audit(srv) if e["who"] == who and e["result"] == "forbidden"]
        assert {"queue.view", "queue.show", "queue.change", "shards.view"} <= {
            e["action"] for e in refused
        }
    assert alice.get("/admin/filters").status == 403
    assert settled(srv, qid) == before
    assert boss.get("/admin").status == 200
    assert "/admin/queue" not in boss.get("/admin").text  # no menu entry either


def test_the_filter_log_shows_refusals_by_domain(srv: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("client.test")
        s.mail("spammer@else.test")
        assert s.rcpt(srv.user)[0] == 550
        assert s.rcpt("bob@other.test")[0] == 550
    postmaster = as_user(srv, "postmaster@example.test", POSTMASTER_PASSWORD)

    def shown() -> str:
        page = postmaster.get("/admin/filters?action=reject")
        text = html.unescape(page.text)
        return text if "bob@other.test" in text and srv.user in text else ""

    text = wait_for(shown)
    assert "spammer@else.test" in text and "550 5.7.1 no thanks" in text
    boss = as_user(srv, "boss@other.test", BOSS_PASSWORD)
    theirs = html.unescape(boss.get("/admin/filters").text)
    assert "bob@other.test" in theirs and srv.user not in theirs
    by_address = html.unescape(postmaster.get("/admin/filters?address=BOB@other").text)
    assert "bob@other.test" in by_address and srv.user not in by_address
    assert "No entries match." in postmaster.get("/admin/filters?check=nosuchcheck").text
    assert "No entries match." in postmaster.get("/admin/filters?action=junk").text


def test_the_shard_page_matches_the_command(
    srv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    postmaster = as_user(srv, "postmaster@example.test", POSTMASTER_PASSWORD)
    listing = cli_out(srv, capsys, "shard", "list")
    roots = [line.split("\t") for line in listing.splitlines()]
    cheap = postmaster.get("/admin/shards")
    counted = postmaster.get("/admin/shards?bytes=1")
    for root, shards, users, _ in roots:
        row = f"<td>{root}</td><td>{shards.removeprefix('shards ')}</td><td>{users.split()[0]}</td>"
        assert row in cheap.text and row in counted.text
    assert "not counted" in cheap.text and "not counted" not in counted.text
    for report in shardmove.report(srv.data):
        assert f"<td>{report.bytes / (1024 * 1024):.1f}</td>" in counted.text


def test_the_pages_need_a_login(srv: RunningServer) -> None:
    anonymous = Browser(srv)
    for path in ("/admin/queue", "/admin/filters", "/admin/shards"):
        assert anonymous.get(path).status == 303
