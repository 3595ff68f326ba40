"""The admin console in a real headless Chromium on a 360-pixel-wide phone screen (issue 17):
the postmaster goes from the webmail to the console, creates a user with the keyboard, finds
her by search and opens her page; she then logs in.  Every field is found by its label,
nothing overflows the screen and no page breaks its Content-Security-Policy.  A domain admin
sees only their domain, and is refused another's, by link and by a forged form alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browserhelp import chromium, needs_chromium
from conftest import RunningServer, running_server

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password
from ourmail.config import AdminSettings

playwright = pytest.importorskip("playwright.sync_api")
axe = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = needs_chromium

PASSWORD = "postmaster's own long password"
BOSS_PASSWORD = "the other domain's boss password"
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


@pytest.fixture
def mailserver(tmp_path: Path) -> Iterator[RunningServer]:
    """The server, with boss@other.test the admin of other.test only."""
    admin = AdminSettings(
        admins=("postmaster@example.test",), domain_admins={"boss@other.test": ("other.test",)}
    )
    with running_server(tmp_path, admin=admin) as server:
        accounts = server.server.accounts
        accounts.add_domain("other.test")
        accounts.add_user("boss@other.test", hash_password(BOSS_PASSWORD))
        accounts.add_user("bob@other.test", hash_password(BOSS_PASSWORD))
        yield server


def violations(page: object) -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations on the page, one line each."""
    found = axe.Axe().run(page, options=WCAG).response["violations"]
    return [f"{v['id']}: {[n['html'][:120] for n in v['nodes']]}" for v in found]


def test_the_postmaster_creates_a_user_on_a_phone(mailserver: RunningServer) -> None:
    mailserver.server.accounts.set_password("postmaster@example.test", hash_password(PASSWORD))
    base = f"https://127.0.0.1:{mailserver.port('web')}"
    with chromium() as browser:
        context = browser.new_context(
            ignore_https_errors=True, locale="en-GB", viewport={"width": 360, "height": 740}
        )
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(f"{base}/login")
        page.get_by_label("Address").fill("postmaster@example.test")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        page.get_by_role("link", name="Admin console").click()
        page.wait_for_url(f"{base}/admin")
        assert page.get_by_role("heading", name="Running services").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360

        page.get_by_role("link", name="Users", exact=True).first.click()
        page.wait_for_url(f"{base}/admin/users")
        page.get_by_label("Address", exact=True).fill("carol@example.test")
        page.get_by_label("Password", exact=True).fill("carol's first password")
        page.get_by_label("Password", exact=True).press("Enter")
        page.wait_for_url("**/admin/users?done=added*")
        assert "carol@example.test has been created" in page.get_by_role("status").inner_text()
        assert AccountDB(mailserver.data).has_user("carol@example.test")

        page.get_by_label("Address contains").fill("carol")
        page.get_by_label("Address contains").press("Enter")
        page.wait_for_url("**/admin/users?*q=carol*")
        page.get_by_role("link", name="carol@example.test").click()
        page.wait_for_url("**/admin/user?address=carol%40example.test")
        assert page.get_by_role("heading", name="carol@example.test").is_visible()
        assert page.get_by_label("Size limit in MiB (0: none)").input_value() == "0"
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        # Every page of the console passes axe-core's WCAG 2.1 A/AA rules, in both languages.
        for path in (
            "/admin",
            "/admin/domains",
            "/admin/dns?domain=example.test",
            "/admin/users",
            "/admin/aliases",
            "/admin/groups",
            "/admin/queue",
            "/admin/filters",
            "/admin/shards",
            "/admin/certificates",
        ):
            page.goto(base + path)
            assert violations(page) == [], path
            assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
        page.get_by_role("button", name="Ελληνικά").click()
        page.goto(f"{base}/admin/user?address=carol%40example.test")
        assert page.get_by_role("heading", name="Όριο αποθήκευσης").is_visible()
        assert violations(page) == []
        assert problems == []

        carol = browser.new_context(ignore_https_errors=True, locale="en-GB").new_page()
        carol.goto(f"{base}/login")
        carol.get_by_label("Address").fill("carol@example.test")
        carol.get_by_label("Password", exact=True).fill("carol's first password")
        carol.get_by_role("button", name="Log in").click()
        carol.wait_for_url(f"{base}/")
        assert carol.get_by_role("link", name="Admin console").count() == 0


def test_a_domain_admin_sees_only_their_domain_and_forged_forms_fail(
    mailserver: RunningServer,
) -> None:
    base = f"https://127.0.0.1:{mailserver.port('web')}"
    with chromium() as browser:
        page = browser.new_context(ignore_https_errors=True, locale="en-GB").new_page()
        page.goto(f"{base}/login")
        page.get_by_label("Address").fill("boss@other.test")
        page.get_by_label("Password", exact=True).fill(BOSS_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        page.get_by_role("link", name="Admin console").click()
        page.wait_for_url(f"{base}/admin")
        page.get_by_role("link", name="Users", exact=True).first.click()
        page.wait_for_url(f"{base}/admin/users")
        listed = page.locator("main").inner_text()
        assert "bob@other.test" in listed and "example.test" not in listed
        # Another domain by address bar, and forms posted with the page's own token.
        for path in ("/admin/users?domain=example.test", "/admin/user?address=postmaster"):
            response = page.goto(base + path)
            assert response is not None and response.status == 403, path
        page.goto(f"{base}/admin/users")
        forged = page.evaluate(
            """async () => {
                const csrf = document.querySelector('input[name=csrf]').value;
                const send = (path, fields) => fetch(path, {method: 'POST',
                    body: new URLSearchParams({csrf, ...fields}), redirect: 'manual'});
                return [
                    (await send('/admin/users/add', {address: 'mallory@example.test',
                                                     password: 'a long enough password'})).status,
                    (await send('/admin/user/password', {address: 'postmaster@example.test',
                                                         password: 'taken over at last'})).status,
                    (await send('/admin/user/delete', {address: 'postmaster@example.test'})).status,
                    (await send('/admin/aliases/add', {address: 'all@example.test',
                                                       targets: 'boss@other.test'})).status,
                ];
            }"""
        )
        assert forged == [403, 403, 403, 403]
    accounts = AccountDB(mailserver.data)
    assert not accounts.has_user("mallory@example.test")
    assert (
        accounts.has_user("postmaster@example.test") and accounts.alias("all@example.test") is None
    )


def test_the_postmaster_creates_and_deletes_a_list(mailserver: RunningServer) -> None:
    """The lists' page's "New list" form and a list's "Delete the list" box, by keyboard
    and labels, on a phone; both pages pass axe-core's rules, in both languages."""
    mailserver.server.accounts.set_password("postmaster@example.test", hash_password(PASSWORD))
    base = f"https://127.0.0.1:{mailserver.port('web')}"
    with chromium() as browser:
        context = browser.new_context(
            ignore_https_errors=True, locale="en-GB", viewport={"width": 360, "height": 740}
        )
        page = context.new_page()
        page.goto(f"{base}/login")
        page.get_by_label("Address").fill("postmaster@example.test")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        page.goto(f"{base}/admin/lists")
        assert page.get_by_role("heading", name="New list").is_visible()
        assert violations(page) == []
        page.get_by_label("List address").fill("team@example.test")
        page.get_by_label("Owners, one address per line").fill("postmaster@example.test")
        page.get_by_label("Name (optional)").fill("Team")
        page.get_by_role("button", name="Create list").click()
        page.wait_for_url("**/admin/list?address=team%40example.test&done=created")
        assert "takes mail now" in page.get_by_role("status").inner_text()
        assert violations(page) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.get_by_label("Yes, delete team@example.test").check()
        page.get_by_role("button", name="Delete the list").click()
        page.wait_for_url("**/admin/lists?done=list-deleted*")
        assert "archive is kept" in page.get_by_role("status").inner_text()
        page.get_by_role("button", name="Ελληνικά").click()
        page.goto(f"{base}/admin/lists")
        page.get_by_label("Διεύθυνση λίστας").fill("team@example.test")
        page.get_by_label("Διαχειριστές, μία διεύθυνση ανά γραμμή").fill("nobody")
        page.get_by_role("button", name="Δημιουργία λίστας").click()
        assert page.get_by_role("alert").is_visible()
        assert violations(page) == []
