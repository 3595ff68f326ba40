"""The first run in a real headless Chromium on a phone-sized screen (issue 17 point 1): on an
empty data folder, the one-time password from the server's log opens the set-up wizard; the
admin chooses a password (the strength meter reacting to what is typed), a new mail domain
and host name, creates a user, makes the DKIM key and finishes.  That user then receives a
message over SMTP in the new domain, without a restart, and fetches it over IMAP.  No page
breaks its Content-Security-Policy, and the summary passes axe-core's WCAG 2.1 A/AA rules."""

from __future__ import annotations

import imaplib
import re
import smtplib
from pathlib import Path

import pytest
from browserhelp import chromium, needs_chromium
from conftest import client_tls, running_server
from loghelp import captured

playwright = pytest.importorskip("playwright.sync_api")
axe = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = needs_chromium

ADMIN_PASSWORD = "correct horse battery staple"
BOB_PASSWORD = "a garden of seven lemons"
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


def violations(page: object) -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations on the page, one line each."""
    found = axe.Axe().run(page, options=WCAG).response["violations"]
    return [f"{v['id']}: {[n['html'][:120] for n in v['nodes']]}" for v in found]


def test_first_run_from_the_printed_password_to_mail_over_imap(tmp_path: Path) -> None:
    with (
        captured() as events,
        running_server(tmp_path, domain="first.test", hostname="mail.first.test") as srv,
    ):
        found = re.search(r"with the one-time password (\S+)", events.text())
        assert found
        base = f"https://127.0.0.1:{srv.port('web')}"
        with chromium() as browser:
            context = browser.new_context(
                ignore_https_errors=True, locale="en-GB", viewport={"width": 360, "height": 740}
            )
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

            page.goto(f"{base}/")  # a fresh server's webmail points to the wizard
            page.get_by_role("link", name="This server is not set up yet").click()
            page.wait_for_url(f"{base}/setup")
            assert page.get_by_label("Address").input_value() == "postmaster@first.test"
            page.get_by_label("One-time password").fill(found.group(1))
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/setup")

            # (a) The meter follows the typing: a common password, then a good one.
            assert violations(page) == []
            meter = page.locator("#strength")
            page.get_by_label("New password").fill("sunshine")
            playwright.expect(page.locator("#strength-text")).to_have_text(
                "One of the most used passwords."
            )
            assert meter.evaluate("m => m.value") == 0
            page.get_by_label("New password").fill(ADMIN_PASSWORD)
            assert meter.evaluate("m => m.value") >= 3
            page.get_by_label("The same password again").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Save and continue").click()

            # (b) A new mail domain and host name.
            page.get_by_label("Mail domains, one a line").fill("new.test")
            page.get_by_label("Host name of this server").fill("mx.new.test")
            page.get_by_role("button", name="Save and continue").click()

            # (c) The first user; the meter knows the name typed above the password.
            page.get_by_label("Name before the @").fill("bob")
            page.get_by_label("Domain").select_option("new.test")
            page.get_by_label("Password", exact=True).fill("bob-and-more")
            playwright.expect(page.locator("#strength-text")).to_have_text(
                "Contains the name of the address."
            )
            page.get_by_label("Password", exact=True).fill(BOB_PASSWORD)
            page.get_by_label("The same password again").fill(BOB_PASSWORD)
            page.get_by_role("button", name="Create user").click()
            page.wait_for_url(f"{base}/setup?step=users")
            assert page.locator("#created").inner_text() == "bob@new.test"
            page.get_by_role("button", name="Continue").click()

            # (d) The DKIM key and its record; (e) the summary, then the console.
            page.get_by_role("button", name="Make the DKIM keys").click()
            page.wait_for_url(f"{base}/setup?step=dkim")
            assert "v=DKIM1; k=rsa; p=" in page.locator("table").inner_text()
            page.get_by_role("button", name="Continue").click()
            page.wait_for_url(f"{base}/setup?step=done")
            assert page.get_by_role("link", name=re.compile("All the records of new.test"))
            assert violations(page) == []
            assert page.evaluate("document.documentElement.scrollWidth") <= 360
            page.get_by_role("button", name="Finish set-up").click()
            page.wait_for_url(f"{base}/admin")
            assert problems == []

        # Mail to the new domain is accepted at once and bob reads it over IMAP.
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.sendmail(
                "someone@example.test",
                ["bob@new.test"],
                b"From: someone@example.test\r\nTo: bob@new.test\r\nSubject: Welcome\r\n"
                b"Message-ID: <welcome@example.test>\r\n\r\nYour mailbox works.\r\n",
            )
        with imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls()) as m:
            m.login("bob@new.test", BOB_PASSWORD)
            m.select("INBOX")
            _, numbers = m.search(None, "ALL")
            assert numbers[0].split()
            _, data = m.fetch(numbers[0].split()[-1], "(BODY[])")
            message = data[0]
            assert isinstance(message, tuple) and b"Your mailbox works." in message[1]
