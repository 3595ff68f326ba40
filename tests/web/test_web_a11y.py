"""Issue 16 point 10 in real Chromium: every page passes axe-core's WCAG 2.1 A and AA rules
(in English and Greek), fits a 360-pixel phone screen without sideways scrolling, and the
shared keyboard shortcuts work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browserhelp import chromium, log_in, needs_chromium
from conftest import RunningServer
from imaphelp import deliver

playwright = pytest.importorskip("playwright.sync_api")
axe = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = needs_chromium
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
#: The logged-in pages audited: the inbox, a message, compose, a reply, settings, search.
PAGES = [
    "/",
    "/message?folder=INBOX&uid=1",
    "/compose",
    "/compose?reply=INBOX:1",
    "/settings",
    "/mail?folder=INBOX&subject=message",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as opened:
        yield opened


def violations(page: Any) -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations on the page, one line each."""
    found = axe.Axe().run(page, options=WCAG).response["violations"]
    return [f"{v['id']}: {[n['html'][:120] for n in v['nodes']]}" for v in found]


def scrolls_sideways(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"))


@pytest.mark.parametrize("locale", ["en-GB", "el-GR"])
def test_pages_pass_axe_and_fit_a_phone(
    mailserver: RunningServer, browser: Any, locale: str
) -> None:
    deliver(mailserver, 2)
    base = f"https://127.0.0.1:{mailserver.port('web')}"
    for viewport in ({"width": 1280, "height": 800}, {"width": 360, "height": 740}):
        context = browser.new_context(ignore_https_errors=True, locale=locale, viewport=viewport)
        page = context.new_page()
        page.goto(f"{base}/login")
        assert page.evaluate("document.documentElement.lang") == locale[:2]
        assert violations(page) == []
        assert not scrolls_sideways(page)
        log_in(page, base, mailserver)
        for path in PAGES:
            page.goto(f"{base}{path}")
            assert violations(page) == [], path
            assert not scrolls_sideways(page), (path, viewport)
        context.close()


def test_the_shared_keyboard_shortcuts(mailserver: RunningServer, browser: Any) -> None:
    base = f"https://127.0.0.1:{mailserver.port('web')}"
    context = browser.new_context(ignore_https_errors=True, locale="en-GB")
    page = context.new_page()
    log_in(page, base, mailserver)
    dialog = page.locator("#shortcuts")
    page.keyboard.press("?")
    playwright.expect(dialog).to_be_visible()
    assert violations(page) == []
    page.keyboard.press("Escape")
    playwright.expect(dialog).to_be_hidden()
    # WCAG 2.1 SC 2.1.4: single-key shortcuts can be turned off (and on again).
    page.get_by_role("button", name="Keyboard shortcuts").click()
    playwright.expect(dialog).to_be_visible()
    page.get_by_label("Use single-key shortcuts").uncheck()
    page.get_by_role("button", name="Close").click()
    playwright.expect(dialog).to_be_hidden()
    page.keyboard.press("?")
    assert not dialog.is_visible()
    page.reload()  # the choice is kept
    page.keyboard.press("?")
    assert not dialog.is_visible()
    page.get_by_role("button", name="Keyboard shortcuts").click()
    page.get_by_label("Use single-key shortcuts").check()
    page.get_by_role("button", name="Close").click()
    page.keyboard.press("?")
    playwright.expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    page.keyboard.press("c")  # write
    page.wait_for_url(f"{base}/compose")
    page.locator("#subject").focus()
    page.keyboard.press("g")  # typed into the field, not a shortcut
    page.keyboard.press("i")
    assert page.locator("#subject").input_value() == "gi"
    page.locator("#subject").fill("")
    page.locator("h1").first.click()  # out of the field
    page.keyboard.press("g")
    page.keyboard.press("i")
    page.wait_for_url(f"{base}/")
    page.keyboard.press("/")  # the search form opens with its first field focused
    assert page.evaluate("document.activeElement.name") == "from"
    context.close()
