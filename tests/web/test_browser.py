"""End to end in a real headless Chromium (Debian's ``chromium``, driven by playwright):
open the login page, log in, see the folder list and its unread count change as mail arrives,
log out (issue 16 points 1-3)."""

from __future__ import annotations

import pytest
from browserhelp import chromium, needs_chromium
from conftest import RunningServer
from imaphelp import deliver

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = needs_chromium


def test_log_in_and_see_the_folders_in_chromium(mailserver: RunningServer) -> None:
    deliver(mailserver, 1)
    base = f"https://127.0.0.1:{mailserver.port('web')}"
    with chromium() as browser:
        context = browser.new_context(ignore_https_errors=True, locale="en-GB")
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(f"{base}/")  # not logged in: the login page
        assert page.url == f"{base}/login"
        page.get_by_label("Address").fill(mailserver.user)
        page.get_by_label("Password").fill(mailserver.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        folders = page.locator(".folders li")
        assert folders.first.locator(".name").inner_text() == "INBOX"
        assert folders.first.locator(".unseen .count").inner_text() == "1"
        assert "Trash" in page.locator(".folders").inner_text()
        # New mail shows in the tree without a reload (server-sent events).
        deliver(mailserver, 1)
        inbox = folders.first.locator(".unseen .count")
        playwright.expect(inbox).to_have_text("2", timeout=15_000)
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["__Host-ourmail_session"]
        assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
        # Scripts on the page cannot read the session cookie.
        assert "ourmail_session" not in page.evaluate("document.cookie")
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(f"{base}/login")
        page.goto(f"{base}/")
        assert page.url == f"{base}/login"
        assert not problems, problems  # no CSP violation, no failed load
