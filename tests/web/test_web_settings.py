"""The settings page over HTTPS on a real server (issue 16 point 9): the password change goes
through the login's portal and throttle, is hashed as ``ourmail user passwd`` hashes, ends the
other web sessions and is seen at once by IMAP (the login cache included); the signature and
the out-of-office reply are kept in the user's settings; forged forms are refused."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from conftest import PASSWORD, RunningServer, running_server
from twisted.internet import reactor
from webhelp import Browser, Response, imap_login

from ourmail.config import ThrottleSettings
from ourmail.prefs import PreferenceFiles

NEW = "a much better passphrase"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    throttle = ThrottleSettings(
        base_delay=0.01, max_delay=0.05, account_limit=3, account_lockout=60, client_limit=5
    )
    with running_server(tmp_path, auth_throttle=throttle) as server:
        yield server


def logged_in(srv: RunningServer, source: str = "127.0.0.1") -> Browser:
    browser = Browser(srv, source)
    assert browser.login(srv.user, srv.password).status == 303
    return browser


def change(browser: Browser, current: str, new: str, again: str | None = None) -> Response:
    token = browser.get("/settings").csrf()
    fields = {
        "csrf": token,
        "current": current,
        "new": new,
        "again": new if again is None else again,
    }
    return browser.post("/settings/password", fields)


def stored_hash(srv: RunningServer) -> str:
    accounts = json.loads((srv.data / "accounts.json").read_text())
    return str(accounts["users"][srv.user]["password"])


def prefs(srv: RunningServer, key: str) -> object:
    return PreferenceFiles(srv.data / "prefs").get(srv.user, key)


def test_the_page_has_its_three_forms_and_its_style(srv: RunningServer) -> None:
    browser = logged_in(srv)
    page = browser.get("/settings")
    assert page.status == 200
    for action in ("/settings/password", "/settings/signature", "/settings/vacation"):
        assert f'action="{action}"' in page.text
    assert 'autocomplete="current-password"' in page.text and "/static/settings.css" in page.text
    assert "style=" not in page.text and "<script>" not in page.text  # the CSP allows neither
    assert browser.get("/static/settings.css").status == 200
    browser.accept_language = "el"
    assert "Αυτόματη απάντηση απουσίας" in browser.get("/settings").text
    assert Browser(srv).get("/settings").headers["location"] == "/login"


def test_a_password_change(srv: RunningServer) -> None:
    other = logged_in(srv, "127.0.0.2")
    assert b"OK" in imap_login(srv, PASSWORD)  # remembered by the login cache from now on
    browser = logged_in(srv)
    before = stored_hash(srv)
    done = change(browser, PASSWORD, NEW)
    assert done.status == 303 and done.headers["location"] == "/settings?saved=password"
    assert "Your password has been changed" in browser.get(done.headers["location"]).text
    # Hashed as `ourmail user passwd` does: argon2id, and a new hash.
    assert stored_hash(srv).startswith("$argon2id$") and stored_hash(srv) != before
    # The other browser's session is over; this one's is not.
    assert other.get("/settings").headers.get("location") == "/login"
    assert browser.get("/settings").status == 200
    # The old password no longer works anywhere, the login cache included; the new one does.
    assert b"AUTHENTICATIONFAILED" in imap_login(srv, PASSWORD, "127.0.0.3")
    assert b"OK" in imap_login(srv, NEW, "127.0.0.4")
    assert Browser(srv, "127.0.0.5").login(srv.user, PASSWORD).status == 401
    assert Browser(srv, "127.0.0.6").login(srv.user, NEW).status == 303


def test_a_wrong_current_password_counts_as_a_failed_login(srv: RunningServer) -> None:
    browser = logged_in(srv)
    before = stored_hash(srv)
    for _ in range(3):
        wrong = change(browser, "not my password", NEW)
        assert wrong.status == 401 and "current password is not right" in wrong.text
    # Three failures lock the account for every protocol, as failed logins do (except for
    # addresses that logged in to it before, such as this browser's) ...
    assert b"AUTHENTICATIONFAILED" in imap_login(srv, PASSWORD, "127.0.0.8")
    assert Browser(srv, "127.0.0.9").login(srv.user, PASSWORD).status == 401
    # ... and five lock out the client guessing: then even the right password is refused.
    for _ in range(2):
        assert change(browser, "still not it", NEW).status == 401
    assert change(browser, PASSWORD, NEW).status == 401
    assert stored_hash(srv) == before


@pytest.mark.parametrize(
    ("new", "again", "message"),
    [
        ("short pw", "short pw", "at least 10 characters"),
        (NEW, NEW + "!", "not the same"),
        ("ALICE@example.test", "ALICE@example.test", "must not be your address"),
        (PASSWORD, PASSWORD, "must differ"),
        ("", "", "Enter your current password"),
    ],
)
def test_a_new_password_that_cannot_be_taken(
    srv: RunningServer, new: str, again: str, message: str
) -> None:
    browser = logged_in(srv)
    before = stored_hash(srv)
    refused = change(browser, PASSWORD, new, again)
    assert refused.status == 400 and message in refused.text
    assert PASSWORD not in refused.text  # passwords are never shown again
    assert stored_hash(srv) == before


def test_forged_forms_are_refused(srv: RunningServer) -> None:
    browser = logged_in(srv)
    before = stored_hash(srv)
    forms = {
        "/settings/password": {"current": PASSWORD, "new": NEW, "again": NEW},
        "/settings/signature": {"signature": "forged"},
        "/settings/vacation": {"enabled": "on", "text": "forged", "days": "7"},
    }
    for path, fields in forms.items():
        assert browser.post(path, {**fields, "csrf": "x" * 43}).status == 403
        assert browser.post(path, fields).status == 403
        assert Browser(srv).post(path, fields).headers["location"] == "/login"
    assert stored_hash(srv) == before
    assert prefs(srv, "compose.signature") is None and prefs(srv, "vacation") is None


def test_the_signature_is_kept(srv: RunningServer) -> None:
    browser = logged_in(srv)
    token = browser.get("/settings").csrf()
    signature = "Άννα Παπαδοπούλου\r\nΥπουργείο <Ψηφιακής> Διακυβέρνησης\r\n"
    saved = browser.post("/settings/signature", {"csrf": token, "signature": signature})
    assert saved.headers["location"] == "/settings?saved=signature"
    assert (
        prefs(srv, "compose.signature") == "Άννα Παπαδοπούλου\nΥπουργείο <Ψηφιακής> Διακυβέρνησης"
    )
    page = browser.get("/settings?saved=signature").text
    assert "Your signature has been saved" in page and "&lt;Ψηφιακής&gt;" in page
    too_long = browser.post("/settings/signature", {"csrf": token, "signature": "x" * 2001})
    assert too_long.status == 400 and "too long" in too_long.text
    assert (
        prefs(srv, "compose.signature") == "Άννα Παπαδοπούλου\nΥπουργείο <Ψηφιακής> Διακυβέρνησης"
    )
    # New messages and replies start with it, below the RFC 3676 "-- " line.
    new = browser.get("/compose").text
    assert "\n-- \nΆννα Παπαδοπούλου\nΥπουργείο &lt;Ψηφιακής&gt; Διακυβέρνησης" in new
    browser.post("/settings/signature", {"csrf": token, "signature": "  \r\n"})
    assert prefs(srv, "compose.signature") is None  # emptied
    assert "-- " not in browser.get("/compose").text.split('id="body"', 1)[1].split("</textarea")[0]


def test_the_out_of_office_settings_are_kept(srv: RunningServer) -> None:
    browser = logged_in(srv)
    token = browser.get("/settings").csrf()
    fields = {
        "csrf": token,
        "enabled": "on",
        "subject": "Εκτός γραφείου",
        "text": "Back on Monday.\r\n",
        "first": "2026-12-01",
        "last": "2026-12-24",
        "days": "3",
    }
    saved = browser.post("/settings/vacation", fields)
    assert saved.headers["location"] == "/settings?saved=vacation"
    assert prefs(srv, "vacation") == {
        "enabled": True,
        "subject": "Εκτός γραφείου",
        "text": "Back on Monday.",
        "first": "2026-12-01",
        "last": "2026-12-24",
        "days": 3,
    }
    page = browser.get("/settings?saved=vacation").text
    assert ("is on today" in page) == (date(2026, 12, 1) <= date.today() <= date(2026, 12, 24))
    assert 'value="2026-12-24"' in page and re.search(r'id="vacation-enabled"[^>]*checked', page)
    for change_, message in [
        ({"last": "2026-11-01"}, "before the first day"),
        ({"first": "1 December"}, "not valid"),
        ({"days": "0"}, "1 to 90 days"),
        ({"days": "seven"}, "1 to 90 days"),
        ({"text": " "}, "Write the text"),
        ({"text": "x" * 10_001}, "too long"),
        ({"subject": "x" * 201}, "too long"),
    ]:
        refused = browser.post("/settings/vacation", {**fields, **change_})
        assert refused.status == 400 and message in refused.text, change_
        typed = change_.get("subject", "Εκτός γραφείου")
        assert f'value="{typed}"' in refused.text  # the form comes back as typed
    assert prefs(srv, "vacation")["days"] == 3  # type: ignore[index]
    one_line = browser.post("/settings/vacation", {**fields, "subject": "Away\r\nBcc: x@far.test"})
    assert one_line.status == 303
    assert prefs(srv, "vacation")["subject"] == "Away Bcc: x@far.test"  # type: ignore[index]
    off = browser.post("/settings/vacation", {"csrf": token, "text": "", "days": "7"})
    assert off.status == 303 and prefs(srv, "vacation")["enabled"] is False  # type: ignore[index]
    assert "is on today" not in browser.get("/settings").text
    now = {**fields, "first": "", "last": ""}
    assert browser.post("/settings/vacation", now).status == 303
    assert "is on today" in browser.get("/settings").text


@pytest.mark.skipif(shutil.which("slapd") is None, reason="scripts/test installs slapd")
def test_a_directory_user_changes_the_password_in_the_directory(tmp_path: Path) -> None:
    from peers.slapd import SUFFIX, slapd, user_ldif

    from ourmail.directory.ldap import LDAPChecker, LDAPSettings

    with slapd(user_ldif("dana", "dana pw")) as directory:
        settings = LDAPSettings.from_urls(f"{directory.url}/{SUFFIX}?timeout=2")
        with running_server(tmp_path, checkers=[LDAPChecker(settings, reactor)]) as srv:
            browser = Browser(srv)
            assert browser.login("dana@example.test", "dana pw").status == 303
            page = browser.get("/settings")
            assert "kept by your organisation" in page.text
            assert 'action="/settings/password"' not in page.text
            fields = {"csrf": page.csrf(), "current": "dana pw", "new": NEW, "again": NEW}
            refused = browser.post("/settings/password", fields)
            assert refused.status == 400 and "kept by your organisation" in refused.text
