"""The settings page in a real headless Chromium on a 360-pixel-wide phone screen: every field
is found by its label, the forms work by keyboard alone, nothing overflows the screen and the
page breaks no rule of its Content-Security-Policy."""

from __future__ import annotations

import pytest
from browserhelp import chromium, needs_chromium
from conftest import RunningServer

from ourmail.prefs import PreferenceFiles

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = needs_chromium


def test_settings_on_a_phone_by_keyboard(mailserver: RunningServer) -> None:
    base = f"https://127.0.0.1:{mailserver.port('web')}"
    with chromium() as browser:
        context = browser.new_context(
            ignore_https_errors=True, locale="en-GB", viewport={"width": 360, "height": 740}
        )
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(f"{base}/login")
        page.get_by_label("Address").fill(mailserver.user)
        page.get_by_label("Password", exact=True).fill(mailserver.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        page.get_by_role("link", name="Settings").click()
        page.wait_for_url(f"{base}/settings")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        for heading in ("Password", "Signature", "Out-of-office reply"):
            assert page.get_by_role("heading", name=heading).is_visible()

        # The out-of-office form by keyboard: tick the box, type, submit with Enter.
        page.get_by_label("Send an automatic reply to the mail I receive").focus()
        page.keyboard.press("Space")
        page.get_by_label("Subject of the reply").fill("Away")
        page.get_by_label("Text of the reply").fill("Back on Monday.")
        page.get_by_label("First day (optional)").fill("2026-12-01")
        page.get_by_label("Reply to the same sender once every so many days").fill("5")
        page.get_by_label("Subject of the reply").press("Enter")
        page.wait_for_url(f"{base}/settings?saved=vacation")
        assert page.get_by_role("status").inner_text().startswith("Your out-of-office reply")
        kept = PreferenceFiles(mailserver.data / "prefs").get(mailserver.user, "vacation")
        assert kept == {
            "enabled": True,
            "subject": "Away",
            "text": "Back on Monday.",
            "first": "2026-12-01",
            "last": None,
            "days": 5,
        }
        assert page.get_by_label("Send an automatic reply to the mail I receive").is_checked()

        # A wrong current password: the error is announced (role=alert).
        page.get_by_label("Current password").fill("not my password")
        page.get_by_label("New password", exact=True).fill("a much better passphrase")
        page.get_by_label("New password again").fill("a much better passphrase")
        page.get_by_role("button", name="Change password").click()
        alert = page.get_by_role("alert")
        assert "current password is not right" in alert.inner_text()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        # No CSP violation, no failed load: the one error is the form's own 401 answer.
        assert problems == [
            "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        ]
