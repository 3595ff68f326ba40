"""The admin console over HTTPS on a real server (issue 17 points 4 and 5): the postmaster
manages users and aliases through the same code as the ``ourmail`` commands, a plain user and
a domain admin outside their domains get 403 on every URL (also by forged requests), hostile
form values are refused with nothing stored, and every change and refusal is in the audit
log, without a password."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import RunningServer, running_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from webhelp import Browser, Response, imap_login

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password
from ourmail.config import AdminSettings
from ourmail.store.shards import ShardMap

POSTMASTER_PASSWORD = "postmaster's own long password"
BOSS_PASSWORD = "the other domain's boss password"
NEW_PASSWORD = "carol's first password"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    admin = AdminSettings(
        # chief@other.test: an admin with no local account (say, an LDAP person).
        admins=("postmaster@example.test", "chief@other.test"),
        domain_admins={"boss@other.test": ("other.test",)},
    )
    with running_server(tmp_path, admin=admin) as server:
        accounts = server.server.accounts
        accounts.set_password("postmaster@example.test", hash_password(POSTMASTER_PASSWORD))
        accounts.add_domain("other.test")
        accounts.add_user("boss@other.test", hash_password(BOSS_PASSWORD))
        accounts.add_user("bob@other.test", hash_password(BOSS_PASSWORD))
        accounts.set_alias("sales@example.test", ["alice@example.test"])
        yield server


def as_user(srv: RunningServer, address: str, password: str) -> Browser:
    browser = Browser(srv)
    assert browser.login(address, password).status == 303
    return browser


def postmaster(srv: RunningServer) -> Browser:
    return as_user(srv, "postmaster@example.test", POSTMASTER_PASSWORD)


def boss(srv: RunningServer) -> Browser:
    return as_user(srv, "boss@other.test", BOSS_PASSWORD)


def csrf(browser: Browser) -> str:
    m = re.search(r'data-csrf="([^"]+)"', browser.get("/").text)
    assert m
    return m.group(1)


def post(browser: Browser, path: str, fields: dict[str, str], token: bool = True) -> Response:
    return browser.post(path, {"csrf": csrf(browser), **fields} if token else fields)


def audit(srv: RunningServer) -> list[dict[str, Any]]:
    path = srv.data / "log" / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def users(srv: RunningServer) -> list[str]:
    return AccountDB(srv.data).users()


def test_the_postmaster_runs_the_console(srv: RunningServer) -> None:
    browser = postmaster(srv)
    page = browser.get("/admin")
    assert page.status == 200
    assert f"127.0.0.1:{srv.port('imaps')}" in page.text  # the running services, their ports
    assert "example.test" in page.text and "other.test" in page.text
    assert re.search(r"Users: <strong>4</strong>", page.text)  # postmaster, alice, boss, bob
    assert re.search(r"Aliases: <strong>1</strong>", page.text)

    # Create a user, who then logs in to the webmail and over IMAP.
    created = post(
        browser, "/admin/users/add", {"address": "Carol@Example.test", "password": NEW_PASSWORD}
    )
    assert created.status == 303
    confirmed = browser.get(created.headers["location"])
    assert "The user carol@example.test has been created." in confirmed.text
    assert NEW_PASSWORD not in confirmed.text
    carol = as_user(srv, "carol@example.test", NEW_PASSWORD)
    assert carol.get("/").status == 200
    assert imap_login(srv, NEW_PASSWORD, user="carol@example.test").startswith(b"a OK")

    # Her page: quota and usage, after a message arrives.
    def put() -> object:
        return srv.server.store.user("carol@example.test").deliver(
            b"From: a@example.test\r\nSubject: kept\r\n\r\n" + b"x" * 5000 + b"\r\n"
        )

    blockingCallFromThread(reactor, put)
    user_page = browser.get("/admin/user?" + urlencode({"address": "carol@example.test"}))
    assert user_page.status == 200
    assert "Uses 1 MiB in 1 messages." in user_page.text
    saved = post(
        browser,
        "/admin/user/quota",
        {"address": "carol@example.test", "mib": "20", "messages": "0"},
    )
    assert saved.status == 303
    assert "Limit: 20 MiB" in browser.get(saved.headers["location"]).text
    assert AccountDB(srv.data).quota("carol@example.test").bytes == 20 * 1024 * 1024  # type: ignore[union-attr]

    # Reset the password: the old one no longer logs in, the new one does.
    reset = post(
        browser,
        "/admin/user/password",
        {"address": "carol@example.test", "password": "a brand new password"},
    )
    assert reset.status == 303
    assert "The password has been changed." in browser.get(reset.headers["location"]).text
    assert carol.get("/").status == 303  # her web sessions ended with the old password
    assert imap_login(srv, NEW_PASSWORD, user="carol@example.test").startswith(b"a NO")
    assert imap_login(srv, "a brand new password", user="carol@example.test").startswith(b"a OK")

    # Aliases: add, list, delete.
    added = post(
        browser,
        "/admin/aliases/add",
        {"address": "team@example.test", "targets": "carol@example.test\r\nfriend@elsewhere.test"},
    )
    assert added.status == 303
    listing = browser.get("/admin/aliases")
    assert "team@example.test" in listing.text and "friend@elsewhere.test" in listing.text
    assert AccountDB(srv.data).alias("team@example.test") == [
        "carol@example.test",
        "friend@elsewhere.test",
    ]
    assert post(browser, "/admin/aliases/delete", {"address": "team@example.test"}).status == 303
    assert AccountDB(srv.data).alias("team@example.test") is None

    # Delete: the account goes, the mail stays.
    deleted = post(browser, "/admin/user/delete", {"address": "carol@example.test"})
    assert deleted.status == 303
    assert "carol@example.test has been deleted" in browser.get(deleted.headers["location"]).text
    assert "carol@example.test" not in users(srv)
    kept = ShardMap(srv.data).user_dir("carol@example.test")
    assert [p for p in (kept / "new").iterdir()] or [p for p in (kept / "cur").iterdir()]
    assert imap_login(srv, "a brand new password", user="carol@example.test").startswith(b"a NO")

    # The postmaster cannot delete their own account from the console.
    own = post(browser, "/admin/user/delete", {"address": "postmaster@example.test"})
    assert own.status == 400 and "postmaster@example.test" in users(srv)

    lines = audit(srv)
    assert [(e["action"], e["target"], e["result"]) for e in lines] == [
        ("user.add", "carol@example.test", "ok"),
        ("user.quota", "carol@example.test", "ok"),
        ("user.passwd", "carol@example.test", "ok"),
        ("alias.add", "team@example.test", "ok"),
        ("alias.del", "team@example.test", "ok"),
        ("user.del", "carol@example.test", "ok"),
    ]
    for entry in lines:
        assert entry["who"] == "postmaster@example.test"
        assert entry["via"] == "web" and entry["client"] == "127.0.0.1"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", entry["time"])
    text = (srv.data / "log" / "audit.log").read_text()
    assert NEW_PASSWORD not in text and "a brand new password" not in text


def test_paging_and_search(srv: RunningServer) -> None:
    accounts = srv.server.accounts
    hashed = hash_password("not used at all")
    with accounts._update() as data:  # 120 users at once (hashing each would be slow)
        for n in range(120):
            data["users"][f"u{n:03d}@example.test"] = {"password": hashed}
    browser = postmaster(srv)
    first = browser.get("/admin/users?domain=example.test")
    assert "122 users match." in first.text  # and alice, postmaster
    assert first.text.count('href="/admin/user?address=') == 50
    assert "Page 1 of 3" in first.text and "u000@example.test" in first.text
    third = browser.get("/admin/users?domain=example.test&page=3")
    assert third.text.count('href="/admin/user?address=') == 22
    assert "postmaster@example.test" in third.text and "Previous page" in third.text
    found = browser.get("/admin/users?" + urlencode({"q": "U11"}))
    assert "10 users match." in found.text and "u119@example.test" in found.text
    assert browser.get("/admin/users?page=-4").status == 200  # a bad page number is page 1
    assert browser.get("/admin/users?page=999").status == 200  # past the end: an empty page


ADMIN_GETS = [
    "/admin",
    "/admin/users",
    "/admin/users?domain=example.test",
    "/admin/user?address=alice%40example.test",
    "/admin/aliases",
]
ADMIN_POSTS = [
    ("/admin/users/add", {"address": "mallory@example.test", "password": "long enough pw"}),
    ("/admin/user/password", {"address": "postmaster@example.test", "password": "taken over!"}),
    ("/admin/user/quota", {"address": "alice@example.test", "mib": "1", "messages": "1"}),
    ("/admin/user/delete", {"address": "alice@example.test"}),
    ("/admin/aliases/add", {"address": "x@example.test", "targets": "alice@example.test"}),
    ("/admin/aliases/delete", {"address": "sales@example.test"}),
]


def test_a_plain_user_gets_403_everywhere(srv: RunningServer) -> None:
    before = (srv.data / "accounts.json").read_bytes()
    browser = as_user(srv, srv.user, srv.password)
    for path in ADMIN_GETS:
        assert browser.get(path).status == 403, path
    for path, fields in ADMIN_POSTS:
        refused = post(browser, path, fields)
        assert refused.status == 403, path
        assert "for the server&#39;s admins only" in refused.text
    assert (srv.data / "accounts.json").read_bytes() == before
    lines = audit(srv)
    assert len(lines) == len(ADMIN_GETS) + len(ADMIN_POSTS)
    assert {e["result"] for e in lines} == {"forbidden"}
    assert {e["who"] for e in lines} == {srv.user}
    assert "taken over!" not in (srv.data / "log" / "audit.log").read_text()
    # Not logged in at all: the login page, as for every page.
    assert Browser(srv).get("/admin").status == 303


def test_forms_without_the_csrf_token_are_refused(srv: RunningServer) -> None:
    before = (srv.data / "accounts.json").read_bytes()
    browser = postmaster(srv)
    for path, fields in ADMIN_POSTS:
        assert post(browser, path, fields, token=False).status == 403, path
        assert post(browser, path, {**fields, "csrf": "x" * 43}, token=False).status == 403
    assert (srv.data / "accounts.json").read_bytes() == before


@pytest.mark.parametrize(
    "address",
    [
        "",
        "x" * 400 + "@example.test",
        "bob\r\n@example.test",
        "bob@example.test\r\nBcc: mallory@evil.test",
        "bob\x00@example.test",
        "../../etc/passwd@example.test",
        "../x@example.test",
        "<script>alert(1)</script>@example.test",
        "bob@<b>other</b>.test",
        "bob@not-served.test",
        "bob@example.test\u202e",
    ],
)
def test_hostile_addresses_are_refused(srv: RunningServer, address: str) -> None:
    before = (srv.data / "accounts.json").read_bytes()
    browser = postmaster(srv)
    refused = post(browser, "/admin/users/add", {"address": address, "password": "long enough"})
    assert refused.status == 400
    assert 'role="alert"' in refused.text
    assert "<script>" not in refused.text and "<b>" not in refused.text
    alias = post(browser, "/admin/aliases/add", {"address": address, "targets": srv.user})
    assert alias.status == 400 and "<script>" not in alias.text
    target = post(
        browser, "/admin/aliases/add", {"address": "ok@example.test", "targets": address or ","}
    )
    # An address in a domain not served here is a forward elsewhere, a fine target.
    assert target.status == (303 if address == "bob@not-served.test" else 400)
    assert "<script>" not in target.text
    if target.status == 303:
        assert post(browser, "/admin/aliases/delete", {"address": "ok@example.test"}).status == 303
    for path in ("/admin/user/password", "/admin/user/delete"):
        assert post(browser, path, {"address": address, "password": "long enough"}).status == 400
    assert browser.get("/admin/user?" + urlencode({"address": address})).status == 404
    assert (srv.data / "accounts.json").read_bytes() == before


def test_bad_passwords_and_quotas_are_refused(srv: RunningServer) -> None:
    before = (srv.data / "accounts.json").read_bytes()
    browser = postmaster(srv)
    for password in ("", "short", "x" * 2000):
        r = post(browser, "/admin/users/add", {"address": "new@example.test", "password": password})
        assert r.status == 400 and "at least 8 characters" in r.text
        assert password not in r.text or not password
        r = post(browser, "/admin/user/password", {"address": srv.user, "password": password})
        assert r.status == 400 and "at least 8 characters" in r.text
    for mib, messages in (("-1", "0"), ("1e9", "0"), ("0", "<b>"), ("9" * 20, "0")):
        r = post(
            browser, "/admin/user/quota", {"address": srv.user, "mib": mib, "messages": messages}
        )
        assert r.status == 400 and "whole number" in r.text and "<b>" not in r.text
    existing = post(browser, "/admin/users/add", {"address": srv.user, "password": "long enough"})
    assert existing.status == 400 and "already exists" in existing.text
    assert (srv.data / "accounts.json").read_bytes() == before


def test_a_domain_admin_manages_only_their_domain(srv: RunningServer) -> None:
    browser = boss(srv)
    overview = browser.get("/admin")
    assert overview.status == 200
    assert "other.test" in overview.text and "example.test" not in overview.text
    assert "Running services" not in overview.text
    assert re.search(r"Users: <strong>2</strong>", overview.text)
    listing = browser.get("/admin/users")
    assert "bob@other.test" in listing.text and "alice@example.test" not in listing.text
    assert "sales@example.test" not in browser.get("/admin/aliases").text

    # Their own domain: allowed.
    added = post(
        browser, "/admin/users/add", {"address": "dan@other.test", "password": "long enough"}
    )
    assert added.status == 303 and "dan@other.test" in users(srv)
    ok = post(
        browser,
        "/admin/aliases/add",
        {"address": "desk@other.test", "targets": "dan@other.test, help@elsewhere.test"},
    )
    assert ok.status == 303
    assert browser.get("/admin/user?address=bob%40other.test").status == 200

    before = (srv.data / "accounts.json").read_bytes()
    forged = [
        ("/admin/users/add", {"address": "eve@example.test", "password": "long enough"}),
        ("/admin/users/add", {"address": "postmaster", "password": "long enough"}),
        ("/admin/user/password", {"address": "alice@example.test", "password": "taken over!"}),
        ("/admin/user/password", {"address": "boss@other.test", "password": "taken over!"}),
        ("/admin/user/quota", {"address": "alice@example.test", "mib": "1", "messages": "1"}),
        ("/admin/user/delete", {"address": "alice@example.test"}),
        ("/admin/aliases/add", {"address": "x@example.test", "targets": "bob@other.test"}),
        ("/admin/aliases/add", {"address": "@example.test", "targets": "bob@other.test"}),
        ("/admin/aliases/add", {"address": "y@other.test", "targets": "alice@example.test"}),
        ("/admin/aliases/add", {"address": "z@other.test", "targets": "nobody@example.test"}),
        ("/admin/aliases/delete", {"address": "sales@example.test"}),
        # An alias may not take an admin's mail (and the right to send as them), nor every
        # address of the domain (a catch-all would also take the directory's users').
        ("/admin/aliases/add", {"address": "chief@other.test", "targets": "boss@other.test"}),
        ("/admin/aliases/add", {"address": "@other.test", "targets": "boss@other.test"}),
    ]
    for path, fields in forged:
        assert post(browser, path, fields).status == 403, (path, fields)
    for path in (
        "/admin/users?domain=example.test",
        "/admin/aliases?domain=example.test",
        "/admin/user?address=alice%40example.test",
        "/admin/user?address=postmaster",
    ):
        assert browser.get(path).status == 403, path
    assert (srv.data / "accounts.json").read_bytes() == before
    refused = [e for e in audit(srv) if e["result"] == "forbidden"]
    assert len(refused) == len(forged) + 4
    assert {e["who"] for e in refused} == {"boss@other.test"}
    assert {"alice@example.test", "example.test", "@example.test"} <= {e["target"] for e in refused}
    assert "taken over!" not in (srv.data / "log" / "audit.log").read_text()


def test_odd_listing_parameters_are_no_error_and_no_line_break_in_the_audit(
    srv: RunningServer,
) -> None:
    admin = postmaster(srv)
    assert admin.get("/admin/users?page=%C2%B2").status == 200  # a digit, not an ASCII one
    plain = as_user(srv, srv.user, srv.password)
    assert plain.get("/admin/users?domain=x%E2%80%A8%0D%C2%85y").status == 403
    raw = (srv.data / "log" / "audit.log").read_bytes()
    assert b"\xe2\x80\xa8" not in raw and b"\xc2\x85" not in raw and b"\r" not in raw
    assert all(json.loads(line) for line in raw.decode().split("\n") if line)


def test_no_change_without_its_audit_line(srv: RunningServer) -> None:
    """An audit log that cannot be written (here a folder in its place; a file left by root
    under a non-root server is the real case) refuses the change instead of making it
    unrecorded."""
    admin = postmaster(srv)
    token = csrf(admin)
    (srv.data / "log" / "audit.log").unlink(missing_ok=True)
    (srv.data / "log").mkdir(exist_ok=True)
    (srv.data / "log" / "audit.log").mkdir()
    before = (srv.data / "accounts.json").read_bytes()
    refused = admin.post(
        "/admin/users/add",
        {"csrf": token, "address": "zoe@example.test", "password": "long enough"},
    )
    assert refused.status == 400 and "audit log cannot be written" in refused.text
    assert (srv.data / "accounts.json").read_bytes() == before
