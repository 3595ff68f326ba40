"""Disabling an account and ending its open sessions (issue 17 point 4), on a real server with
real clients: ``ourmail user disable`` run as a separate process cuts off IMAP (also in IDLE),
POP3, submission and webmail sessions; a disabled account cannot log in anywhere and is told
exactly what a wrong password is told; mail to it is still accepted; ``enable`` lets it in
again.  A password reset in the console ends the sessions too, the user's own change in the
webmail keeps the session it was made from, and the console's disable form obeys the same
rights as every admin change."""

from __future__ import annotations

import contextlib
import imaplib
import io
import json
import poplib
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from conftest import PASSWORD, RunningServer, client_tls, running_server
from loghelp import captured
from webhelp import Browser, imap_login

from ourmail.admin.cli import main
from ourmail.auth.passwords import hash_password
from ourmail.config import AdminSettings

BOB = "bob@example.test"
ADMIN_PASSWORD = "postmaster's own long password"
BOSS_PASSWORD = "the other domain's boss password"
#: How long a cut-off session may take to notice, at most (a guard against hanging, not a
#: speed test: the revoker looks once a second).
CUT_OFF = 15.0


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    admin = AdminSettings(
        admins=("postmaster@example.test",), domain_admins={"boss@other.test": ("other.test",)}
    )
    with running_server(tmp_path_factory.mktemp("lockout"), admin=admin) as server:
        accounts = server.server.accounts
        accounts.set_password("postmaster@example.test", hash_password(ADMIN_PASSWORD))
        accounts.add_domain("other.test")
        accounts.add_user("boss@other.test", hash_password(BOSS_PASSWORD))
        server.add_user(BOB)
        yield server


def ourmail(srv: RunningServer, *args: str) -> str:
    """The ``ourmail`` command in a process of its own (as an admin runs it)."""
    command = "from ourmail.admin.cli import main; raise SystemExit(main())"
    done = subprocess.run(
        [sys.executable, "-c", command, "--data", str(srv.data), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def command(srv: RunningServer, *args: str) -> str:
    """The ``ourmail`` command in this process (quicker, where crossing processes is not
    what is tested); its output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--data", str(srv.data), *args]) == 0
    return out.getvalue()


def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + CUT_OFF
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def ended(events: Any) -> list[dict[str, Any]]:
    """The revoker's "ending the ... session" events."""
    return [e for e in events.all if "ending the" in str(e.get("log_format", ""))]


def imap_session(srv: RunningServer, password: str = PASSWORD) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
    imap.login(BOB, password)
    imap.select("INBOX")
    imap.sock.settimeout(CUT_OFF)
    return imap


def idling(srv: RunningServer) -> tuple[ssl.SSLSocket, Callable[[], bytes]]:
    """An IMAPS connection of Bob's in IDLE; its socket and a line reader."""
    sock = client_tls().wrap_socket(socket.create_connection(("127.0.0.1", srv.port("imaps"))))
    sock.settimeout(CUT_OFF)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(f'a LOGIN {BOB} "{PASSWORD}"\r\nb SELECT INBOX\r\nc IDLE\r\n'.encode())
    while not f.readline().startswith(b"+ "):
        pass
    return sock, f.readline


def pop3_session(srv: RunningServer) -> poplib.POP3_SSL:
    pop = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=client_tls(), timeout=CUT_OFF)
    pop.user(BOB)
    pop.pass_(PASSWORD)
    return pop


def submission(srv: RunningServer, password: str = PASSWORD) -> smtplib.SMTP_SSL:
    smtp = smtplib.SMTP_SSL(
        "127.0.0.1", srv.port("submissions"), context=client_tls(), timeout=CUT_OFF
    )
    smtp.login(BOB, password)
    return smtp


def web_session(srv: RunningServer, password: str = PASSWORD) -> Browser:
    browser = Browser(srv)
    assert browser.login(BOB, password).status == 303
    assert browser.get("/").status == 200
    return browser


def logged_out(browser: Browser) -> bool:
    page = browser.get("/")
    return page.status == 303 and "/login" in page.headers["location"]


def audit_lines(srv: RunningServer, action: str) -> list[dict[str, str]]:
    lines = (srv.data / "log" / "audit.log").read_text().splitlines()
    return [line for line in map(json.loads, lines) if line["action"] == action]


def test_disable_from_the_command_line_ends_every_session_until_enabled(
    srv: RunningServer,
) -> None:
    imap = imap_session(srv)
    idle_sock, idle_line = idling(srv)
    pop = pop3_session(srv)
    smtp = submission(srv)
    browser = web_session(srv)
    wrong_before = imap_login(srv, "not the password", user=BOB)

    with captured() as events:
        ourmail(srv, "user", "disable", BOB, "--reason", "left the office")

        # RFC 3501 §7.1.5: BYE, then the connection closes, in IDLE or not.
        assert imap.readline().startswith(b"* BYE")
        assert imap.readline() == b""
        imap.shutdown()
        assert idle_line().startswith(b"* BYE")
        assert idle_line() == b""
        idle_sock.close()
        assert pop.file.readline() == b""  # POP3 has no unsolicited reply: closed
        pop.close()  # as a client does at the end of the stream (the server then unlocks)
        assert smtp.getreply()[0] == 421  # RFC 5321 §3.8
        until(lambda: logged_out(browser))

        # No way back in, and the same answer as a wrong password.
        assert imap_login(srv, PASSWORD, user=BOB) == wrong_before
        with pytest.raises(poplib.error_proto, match="Authentication failed"):
            pop3_session(srv)
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            submission(srv)
        assert refused.value.smtp_code == 535
        login = Browser(srv).login(BOB, PASSWORD)
        assert login.status == 401 and "Wrong address or password." in login.text
        # The server's log says why; the line fail2ban counts ("login failed") does not.
        assert {e["service"] for e in events.of("login", result="account-disabled")} == {
            "imap",
            "pop3",
            "smtp",
            "web",
        }
        ended = [e for e in events.all if "ending the" in str(e.get("log_format", ""))]
        assert {e["protocol"] for e in ended} >= {"imap", "pop3", "smtp", "web"}

    # Mail to a disabled account is still accepted (and kept for later).
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "x@elsewhere.test", BOB, "while away"
    message.set_content("kept")
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as mx:
        assert not mx.send_message(message)
    assert BOB in command(srv, "user", "disabled")

    command(srv, "user", "enable", BOB)
    imap = imap_session(srv)
    _, found = imap.search(None, '(SUBJECT "while away")')
    assert found[0].split()
    imap.logout()
    pop3_session(srv).quit()
    submission(srv).quit()
    web_session(srv)

    disabled, enabled = audit_lines(srv, "user.disable"), audit_lines(srv, "user.enable")
    assert disabled[-1]["target"] == BOB and disabled[-1]["result"] == "ok"
    assert disabled[-1]["via"] == "cli" and disabled[-1]["detail"] == "left the office"
    assert enabled[-1]["target"] == BOB and enabled[-1]["result"] == "ok"


def test_a_console_password_reset_ends_sessions_but_not_the_own_change(srv: RunningServer) -> None:
    # Bob's own change in the webmail: his other sessions end, this one goes on.
    browser = web_session(srv)
    other_browser = web_session(srv)
    imap = imap_session(srv)
    settings = browser.get("/settings")
    changed = browser.post(
        "/settings/password",
        {
            "csrf": settings.csrf(),
            "current": PASSWORD,
            "new": "bob's brand new password",
            "again": "bob's brand new password",
        },
    )
    assert changed.status == 303
    assert imap.readline().startswith(b"* BYE")
    until(lambda: logged_out(other_browser))
    time.sleep(2)  # the revoker has looked at the file since (it looks once a second)
    assert browser.get("/").status == 200

    # The admin resets it: every session ends, the web one and an IDLE one included.
    _, idle_line = idling_with(srv, "bob's brand new password")
    admin = Browser(srv)
    assert admin.login("postmaster@example.test", ADMIN_PASSWORD).status == 303
    page = admin.get(f"/admin/user?address={BOB}")
    reset = admin.post(
        "/admin/user/password", {"csrf": page.csrf(), "address": BOB, "password": PASSWORD}
    )
    assert reset.status == 303
    assert idle_line().startswith(b"* BYE")
    until(lambda: logged_out(browser))


def idling_with(srv: RunningServer, password: str) -> tuple[ssl.SSLSocket, Callable[[], bytes]]:
    sock = client_tls().wrap_socket(socket.create_connection(("127.0.0.1", srv.port("imaps"))))
    sock.settimeout(CUT_OFF)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(f'a LOGIN {BOB} "{password}"\r\nc IDLE\r\n'.encode())
    while not f.readline().startswith(b"+ "):
        pass
    return sock, f.readline


def test_the_console_disables_and_enables_within_the_admins_rights(srv: RunningServer) -> None:
    admin = Browser(srv)
    assert admin.login("postmaster@example.test", ADMIN_PASSWORD).status == 303
    imap = imap_session(srv)
    page = admin.get(f"/admin/user?address={BOB}")
    assert page.status == 200 and 'action="/admin/user/disable"' in page.text
    token = page.csrf()

    # Without the CSRF token, by a domain admin of another domain, or for oneself: refused.
    assert admin.post("/admin/user/disable", {"address": BOB}).status == 403
    boss = Browser(srv)
    assert boss.login("boss@other.test", BOSS_PASSWORD).status == 303
    boss_token = boss.get("/admin").csrf()
    assert boss.post("/admin/user/disable", {"csrf": boss_token, "address": BOB}).status == 403
    forbidden = audit_lines(srv, "user.disable")[-1]
    assert forbidden["who"] == "boss@other.test" and forbidden["result"] == "forbidden"
    own = admin.post("/admin/user/disable", {"csrf": token, "address": "postmaster@example.test"})
    assert own.status == 400 and "your own account" in own.text
    refused = audit_lines(srv, "user.disable")[-1]
    assert refused["target"] == "postmaster@example.test"
    assert refused["result"] == "refused: own-account"
    hostile = admin.post(
        "/admin/user/disable", {"csrf": token, "address": BOB, "reason": "x\u202e" + "y" * 3000}
    )
    assert hostile.status == 400 and "one line" in hostile.text
    refused = audit_lines(srv, "user.disable")[-1]
    assert refused["target"] == BOB and refused["result"] == "refused: bad-reason"
    assert srv.server.accounts.disabled(BOB) is None
    assert imap.noop()[0] == "OK"

    done = admin.post("/admin/user/disable", {"csrf": token, "address": BOB, "reason": "audit"})
    assert done.status == 303 and "done=disable" in done.headers["location"]
    assert imap.readline().startswith(b"* BYE")
    page = admin.get(f"/admin/user?address={BOB}&done=disable")
    assert "Disabled" in page.text and "audit" in page.text
    assert 'action="/admin/user/enable"' in page.text
    listing = admin.get("/admin/users?q=bob")
    assert '<span class="tag">disabled</span>' in listing.text
    line = audit_lines(srv, "user.disable")[-1]
    assert (line["via"], line["who"], line["result"]) == ("web", "postmaster@example.test", "ok")

    assert admin.post("/admin/user/enable", {"csrf": token, "address": BOB}).status == 303
    assert srv.server.accounts.disabled(BOB) is None
    imap_session(srv).logout()
    again = admin.post("/admin/user/enable", {"csrf": token, "address": BOB})
    assert again.status == 400 and "is not disabled" in again.text
    assert audit_lines(srv, "user.enable")[-1]["result"] == "refused: not-disabled"


def test_a_disabled_account_is_not_revealed(srv: RunningServer) -> None:
    """Right and wrong passwords of a disabled account, and an unknown name, get one answer."""
    srv.server.accounts.set_disabled(BOB, {"since": "now", "reason": ""})
    try:
        answers = {
            imap_login(srv, PASSWORD, user=BOB),
            imap_login(srv, "wrong password", user=BOB),
            imap_login(srv, PASSWORD, user="nobody@example.test"),
        }
    finally:
        srv.server.accounts.set_disabled(BOB, None)
    assert len(answers) == 1 and b"AUTHENTICATIONFAILED" in answers.pop()


def test_a_message_being_delivered_is_answered_before_the_421(
    srv: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revoked while its message is being delivered (the final "." has arrived), submission
    answers 250 first and then 421: the message is taken, so the client does not send it
    again."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from ourmail.smtp.delivery import Delivery

    dora = "dora@example.test"
    srv.add_user(dora)
    held: list[Deferred[None]] = []
    deliver = Delivery.deliver

    def held_delivery(self: Delivery, txn: Any, source: Any) -> Any:
        gate: Deferred[None] = Deferred()
        held.append(gate)
        return gate.addCallback(lambda _: deliver(self, txn, source))

    monkeypatch.setattr(Delivery, "deliver", held_delivery)
    smtp = smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), context=client_tls())
    smtp.sock.settimeout(CUT_OFF)
    smtp.login(dora, PASSWORD)
    smtp.mail(dora)
    smtp.rcpt(dora)
    smtp.putcmd("data")
    assert smtp.getreply()[0] == 354
    smtp.send(f"From: {dora}\r\nSubject: once\r\n\r\nonly once\r\n.\r\n".encode())
    until(lambda: bool(held))
    try:
        with captured() as events:
            srv.server.accounts.set_disabled(dora, {"since": "now", "reason": ""})
            until(
                lambda: any(
                    e.get("user") == dora and e.get("protocol") == "smtp" for e in ended(events)
                )
            )
        reactor.callFromThread(held[0].callback, None)  # type: ignore[attr-defined]
        assert smtp.getreply()[0] == 250
        assert smtp.getreply()[0] == 421
    finally:
        srv.server.accounts.set_disabled(dora, None)


def test_an_append_being_stored_is_answered_before_the_bye(
    srv: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMAP likewise: revoked while an APPEND is stored, the tagged OK comes before the BYE."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from ourmail.store.folder import MaildirFolder

    erin = "erin@example.test"
    srv.add_user(erin)
    held: list[Deferred[None]] = []
    append = MaildirFolder.append

    def held_append(self: MaildirFolder, *args: Any) -> Any:
        gate: Deferred[None] = Deferred()
        held.append(gate)
        return gate.addCallback(lambda _: append(self, *args))

    monkeypatch.setattr(MaildirFolder, "append", held_append)
    sock = client_tls().wrap_socket(socket.create_connection(("127.0.0.1", srv.port("imaps"))))
    sock.settimeout(CUT_OFF)
    f = sock.makefile("rb")
    f.readline()
    message = b"Subject: once\r\n\r\nonly once\r\n"
    sock.sendall(f'a LOGIN {erin} "{PASSWORD}"\r\n'.encode())
    assert f.readline().startswith(b"a OK")
    sock.sendall(b"b APPEND INBOX {%d+}\r\n%s\r\n" % (len(message), message))
    until(lambda: bool(held))
    try:
        with captured() as events:
            srv.server.accounts.set_disabled(erin, {"since": "now", "reason": ""})
            until(
                lambda: any(
                    e.get("user") == erin and e.get("protocol") == "imap" for e in ended(events)
                )
            )
        reactor.callFromThread(held[0].callback, None)  # type: ignore[attr-defined]
        assert f.readline().startswith(b"b OK [APPENDUID ")
        assert f.readline().startswith(b"* BYE")
        assert f.readline() == b""
    finally:
        sock.close()
        srv.server.accounts.set_disabled(erin, None)
