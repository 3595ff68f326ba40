"""The set-up wizard over HTTPS on a fresh server (issue 17 point 1, docs/setup-wizard.md):
the one-time password from the first start's log is the way in (throttled like every login,
audited without the password) and stops working after the first step; each step refuses bad
and hostile values with the reason (400) and stores nothing; the chosen names reach
``ourmail.toml`` with its comments kept and are served at once; the wizard resumes after a
reload and a restart; once finished, ``/setup`` is closed to GETs and forged POSTs alike."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, running_server
from loghelp import Events, captured
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from webhelp import Browser, Response

from ourmail.auth.accounts import AccountDB
from ourmail.config import ThrottleSettings, load_settings
from ourmail.manage import accountops
from ourmail.manage.audit import AuditFile
from ourmail.manage.setupwizard import LocalSetupWizard

POSTMASTER = "postmaster@first.test"
PASSWORD = "correct horse battery staple"
BOB_PASSWORD = "a garden of seven lemons"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    """A server on an empty data folder, and the one-time password its log shows."""
    # Three failures lock a client out (the login throttle the wizard's sign-in shares).
    throttle = ThrottleSettings(base_delay=0.01, client_limit=3)
    with (
        captured() as events,
        running_server(
            tmp_path_factory.mktemp("setup"),
            domain="first.test",
            hostname="mail.first.test",
            auth_throttle=throttle,
        ) as srv,
    ):
        yield srv, one_time_password(events)


def one_time_password(events: Events) -> str:
    """The password as an admin reads it in the log, and the set-up URL logged with it."""
    text = events.text()
    m = re.search(
        r"created the account postmaster@first\.test with the one-time password (\S+)", text
    )
    assert m, text
    assert re.search(r"open https://mail\.first\.test(:\d+)?/setup to finish set-up", text)
    return m.group(1)


def audit(srv: RunningServer) -> list[dict[str, Any]]:
    path = srv.data / "log" / "audit.log"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def sign_in(
    srv: RunningServer, password: str, user: str = POSTMASTER, source: str = "127.0.0.1"
) -> tuple[Browser, Response]:
    browser = Browser(srv, source)
    token = browser.get("/login").csrf()
    reply = browser.post("/setup/login", {"csrf": token, "username": user, "password": password})
    return browser, reply


def step(browser: Browser, path: str, fields: dict[str, str], token: bool = True) -> Response:
    page = browser.get("/setup")
    sent = {"csrf": page.csrf(), **fields} if token else fields
    return browser.post(path, sent)


def test_the_way_in_is_the_one_time_password_throttled_and_audited(
    fresh: tuple[RunningServer, str],
) -> None:
    srv, once = fresh
    login = Browser(srv).get("/login")
    assert 'href="/setup"' in login.text  # a fresh server points to the wizard
    assert "One-time password" in Browser(srv).get("/setup").text
    greek = Browser(srv)
    greek.accept_language = "el"
    assert "Κωδικός μίας χρήσης" in greek.get("/setup").text
    # Without the form's token: refused before the password is looked at.
    assert (
        Browser(srv).post("/setup/login", {"username": POSTMASTER, "password": once}).status == 403
    )
    for _ in range(3):
        assert sign_in(srv, "guessed wrong", source="127.0.0.3")[1].status == 401
    # That client is locked out now: even the right password is refused.
    assert sign_in(srv, once, source="127.0.0.3")[1].status == 401
    # A user who is no admin is refused (403) and recorded; the login made to check the
    # password ends there (the revoker does not keep it).
    revoker = srv.server.web.authenticator.revoker
    watched = len(revoker)
    assert sign_in(srv, srv.password, user=srv.user)[1].status == 403
    assert len(revoker) == watched
    lines = [e for e in audit(srv) if e["action"] == "setup.signin"]
    assert [e["result"] for e in lines[:3]] == ["refused: wrong password"] * 3
    assert {"who": srv.user, "result": "refused: not an admin"}.items() <= lines[-1].items()
    # The admin check is of the account the login resolved to: a bare name is the primary
    # domain's, as at every login.
    assert sign_in(srv, once, user="postmaster")[1].status == 303
    assert {"who": POSTMASTER, "result": "ok"}.items() <= audit(srv)[-1].items()
    assert once not in (srv.data / "log" / "audit.log").read_text()


def test_the_whole_wizard_with_every_refusal(fresh: tuple[RunningServer, str]) -> None:
    srv, once = fresh
    browser, reply = sign_in(srv, once)
    assert (reply.status, reply.headers["location"]) == (303, "/setup")
    assert "Replace the one-time password" in browser.get("/setup").text

    # (a) The admin's own password, under the rules; a form without the token is forged.
    for bad, reason in [
        ("short", "at least 8 characters"),
        ("postmaster-2026", "must not contain the name"),
        ("sunshine", "most used"),
        ("iLoveYou", "most used"),
        ("line\r\nbreak here", "control characters"),
    ]:
        answer = step(browser, "/setup/password", {"password": bad, "again": bad})
        assert answer.status == 400 and reason in answer.text, bad
    mismatch = step(browser, "/setup/password", {"password": PASSWORD, "again": PASSWORD + "x"})
    assert mismatch.status == 400 and "differ" in mismatch.text
    forged = step(browser, "/setup/password", {"password": PASSWORD, "again": PASSWORD}, False)
    assert forged.status == 403
    other = Browser(srv)
    assert other.login(POSTMASTER, once).status == 303  # nothing changed yet
    assert step(browser, "/setup/password", {"password": PASSWORD, "again": PASSWORD}).status == 303
    assert Browser(srv).login(POSTMASTER, once).status == 401  # the printed one is dead
    # The admin's own change keeps this session (even once the revoker compares); the
    # account's other sessions end, like after a password change in the settings.
    revoker = srv.server.web.authenticator.revoker
    blockingCallFromThread(reactor, revoker.compare)
    assert browser.get("/admin").status == 200
    assert other.get("/admin").status == 303
    # A wizard session ends when the account changes elsewhere (here `ourmail user passwd`).
    spare = sign_in(srv, PASSWORD)[0]
    assert spare.get("/admin").status == 200
    accountops.set_password(
        load_settings(data=str(srv.data)), AccountDB(srv.data), POSTMASTER, PASSWORD
    )
    blockingCallFromThread(reactor, revoker.compare)
    assert spare.get("/admin").status == 303

    # Resumed in a new browser (a reload, another device): at the next step.
    browser = sign_in(srv, PASSWORD)[0]
    page = browser.get("/setup")
    assert "Host name of this server" in page.text and "mail.first.test" in page.text

    # (b) Domains and host name: hostile values refused, nothing stored.
    config = srv.data / "ourmail.toml"
    before = config.read_text()
    for domains, host, reason in [
        ("../etc", "mail.new.test", "not a domain name"),
        ("<b>x</b>.test", "mail.new.test", "not a domain name"),
        ("new.test", "localhost", "not a full host name"),
        ("new.test", "mail", "not a full host name"),
        ("new.test", "mail.new.test\r\nX-Evil: 1", "control characters"),
        ("new.test", "m" * 300, "too long"),
        ("", "mail.new.test", "at least one mail domain"),
    ]:
        answer = step(browser, "/setup/names", {"domains": domains, "hostname": host})
        assert answer.status == 400 and reason in answer.text, (domains, host)
        assert "<b>x</b>" not in answer.text
    # An ourmail.toml the admin broke meanwhile: said so, left alone.
    config.write_text(before + "\n[broken\n")
    answer = step(browser, "/setup/names", {"domains": "new.test", "hostname": "mx.new.test"})
    assert answer.status == 400 and "cannot be read" in answer.text
    assert "The reason: Unexpected character" in answer.text  # the parser's, escaped
    assert config.read_text() == before + "\n[broken\n"
    config.write_text(before)
    assert AccountDB(srv.data).domains() == []

    chosen = {"domains": "new.test\nother.test", "hostname": "MX.New.Test"}
    assert step(browser, "/setup/names", chosen).status == 303
    assert {"new.test", "other.test"} <= set(AccountDB(srv.data).domains())  # served at once
    text = config.read_text()
    assert "# Host name used in greetings, Received: headers" in text  # the comments are kept
    assert text.count("# set by the set-up wizard on ") == 3
    written = load_settings(data=str(srv.data))
    assert written.hostname == "mx.new.test"
    assert written.domains == ("new.test", "other.test", "first.test")
    assert written.admin.admins == (POSTMASTER,)  # still the admin after the restart
    back = browser.get("/setup?step=names")  # going back shows what was chosen
    assert back.status == 200 and "other.test" in back.text and "mx.new.test" in back.text

    # (c) The first users.
    for local, password, reason in [
        ("bob", "bob's secret passphrase", "must not contain the name"),
        ("bob", "baseball", "most used"),
        ("<script>", BOB_PASSWORD, "not a valid address"),
        ("../bob", BOB_PASSWORD, "not a valid address"),
    ]:
        fields = {"local": local, "domain": "new.test", "password": password, "again": password}
        answer = step(browser, "/setup/users", fields)
        assert answer.status == 400 and reason in answer.text, local
        assert "<script>" not in answer.text
    elsewhere = {"local": "bob", "domain": "first.test", "password": BOB_PASSWORD}
    assert step(browser, "/setup/users", {**elsewhere, "again": BOB_PASSWORD}).status == 400
    assert not AccountDB(srv.data).has_user("bob@new.test")
    fields = {"local": "bob", "domain": "new.test", "password": BOB_PASSWORD, "again": BOB_PASSWORD}
    assert step(browser, "/setup/users", fields).status == 303
    assert "bob@new.test" in browser.get("/setup").text
    assert AccountDB(srv.data).has_user("bob@new.test")
    # A file that cannot be written (here setup.json): said so (503) and audited.
    kept = srv.data / "setup.json"
    saved = kept.read_bytes()
    kept.unlink()
    kept.mkdir()
    try:
        answer = step(browser, "/setup/users/done", {})
    finally:
        kept.rmdir()
        kept.write_bytes(saved)
    assert answer.status == 503 and "cannot be written" in answer.text
    assert {"action": "setup.users", "result": "refused: io"}.items() <= audit(srv)[-1].items()
    assert step(browser, "/setup/users/done", {}).status == 303

    # A restart reads the same state back.
    settings = load_settings(data=str(srv.data))
    assert LocalSetupWizard(settings, AuditFile(srv.data)).state().done == (
        "password",
        "names",
        "users",
    )

    # (d) DKIM keys, with the records to publish; (e) the summary.
    assert step(browser, "/setup/dkim", {}).status == 303
    page = browser.get("/setup?step=dkim")
    assert "._domainkey.new.test" in page.text and "v=DKIM1; k=rsa; p=" in page.text
    assert any((srv.data / "dkim" / "other.test").iterdir())
    summary = browser.get("/setup?step=done")
    assert "/admin/dns?domain=new.test" in summary.text
    assert "mx.new.test" in summary.text and "v=spf1" in summary.text
    assert "Restart the server" in summary.text and "the primary domain" in summary.text
    assert step(browser, "/setup/finish", {}).status == 303

    # Closed: GET goes to the console; forged and real POSTs are refused, nothing changed.
    closed = browser.get("/setup")
    assert (closed.status, closed.headers["location"]) == (303, "/admin")
    assert 'href="/setup"' not in Browser(srv).get("/login").text
    token = browser.get("/admin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', token)
    assert csrf
    again = {"csrf": csrf.group(1), "local": "eve", "domain": "new.test"}
    again |= {"password": BOB_PASSWORD, "again": BOB_PASSWORD}
    assert browser.post("/setup/users", again).status == 403
    # A sign-in now is refused without an audit line (anyone may post one).
    written = len(audit(srv))
    assert sign_in(srv, PASSWORD)[1].status == 403
    assert sign_in(srv, "y", user="x" * 300)[1].status == 403
    assert len(audit(srv)) == written
    assert not AccountDB(srv.data).has_user("eve@new.test")

    lines = audit(srv)
    done = [(e["action"], e["target"]) for e in lines if e["result"] == "ok"]
    for expected in [
        ("setup.password", POSTMASTER),
        ("domain.add", "new.test"),
        ("setup.names", "mx.new.test"),
        ("user.add", "bob@new.test"),
        ("alias.add", "postmaster@new.test"),
        ("setup.dkim", "new.test,other.test"),
        ("setup.finish", "new.test,other.test"),
    ]:
        assert expected in done
    assert any(e["action"] == "setup.names" and e["result"] == "refused: bad-config" for e in lines)
    refused = {(e["action"], e["result"]) for e in lines}
    assert {("setup.password", "refused: mismatch"), ("setup.names", "refused: control")} <= refused
    assert ("setup.names", "refused: bad-hostname") in refused
    assert all(e["client"] and e["via"] == "web" and e["time"] for e in lines)
    log = (srv.data / "log" / "audit.log").read_text()
    assert PASSWORD not in log and BOB_PASSWORD not in log and once not in log
