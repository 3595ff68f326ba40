"""Driving the webmail in a real headless Chromium for the browser tests: Debian's
``chromium`` (never ``playwright install``, see ../shared/PEERS.md) through playwright, and
the login form filled as a person does."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest
from conftest import RunningServer
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
#: Mark a browser test module: skipped where Debian's chromium is not installed.
needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (tests/debian-packages.txt)"
)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards."""
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


def log_in(page: Page, base: str, srv: RunningServer) -> None:
    """Open the login page, log in as the server's user, land on the inbox (in any of the
    interface's languages)."""
    page.goto(f"{base}/login")
    page.locator("#username").fill(srv.user)
    page.locator("#password").fill(srv.password)
    page.locator("form.login button[type=submit]").click()
    page.wait_for_url(f"{base}/")


def new_page(browser: Browser, locale: str = "en-GB") -> tuple[Page, list[str]]:
    """A page in a fresh context (the server's self-signed certificate accepted), and the
    list its console errors (a CSP violation, a failed load) are collected in."""
    page = browser.new_context(ignore_https_errors=True, locale=locale).new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    return page, problems
