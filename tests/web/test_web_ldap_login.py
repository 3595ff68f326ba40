"""The webmail logs in with the same checkers as IMAP: LDAP users against a real OpenLDAP
slapd; a directory that is down gives "try later" (503), never a wrong-password page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, running_server
from peers.slapd import SUFFIX, Slapd, slapd, user_ldif
from twisted.internet import reactor
from webhelp import Browser

from ourmail.directory.ldap import LDAPChecker, LDAPSettings

pytestmark = pytest.mark.skipif(shutil.which("slapd") is None, reason="scripts/test installs slapd")


@pytest.fixture
def directory() -> Iterator[Slapd]:
    with slapd(user_ldif("dana", "dana pw")) as server:
        yield server


@pytest.fixture
def srv(tmp_path: Path, directory: Slapd) -> Iterator[RunningServer]:
    settings = LDAPSettings.from_urls(f"{directory.url}/{SUFFIX}?timeout=2")
    with running_server(tmp_path, checkers=[LDAPChecker(settings, reactor)]) as server:
        yield server


def test_an_ldap_user_logs_in_on_the_web(srv: RunningServer) -> None:
    browser = Browser(srv)
    assert browser.login("dana@example.test", "dana pw").status == 303
    page = browser.get("/")
    assert page.status == 200 and "dana@example.test" in page.text and "INBOX" in page.text
    assert Browser(srv).login("dana@example.test", "wrong").status == 401


def test_ldap_down_is_try_later_on_the_web(srv: RunningServer, directory: Slapd) -> None:
    # (Before any successful login: one would be remembered by the login cache, [auth] cache.)
    directory.stop()
    down = Browser(srv).login("dana@example.test", "dana pw")
    assert down.status == 503
    assert "cannot be checked right now" in down.text
