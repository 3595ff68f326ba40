"""Issue 16 points 1-2: the webmail's login over HTTPS: sessions, cookies, CSRF, logout,
expiry, security headers, the redirect from plain HTTP and the login page in Greek."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import RunningServer, client_tls, running_server
from imaphelp import deliver
from twisted.internet import task
from webhelp import Browser

from ourmail.config import Limits, ThrottleSettings
from ourmail.web.app import SESSION_COOKIE

SESSION = SESSION_COOKIE.decode()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    throttle = ThrottleSettings(
        base_delay=0.01, max_delay=0.05, account_limit=3, account_lockout=60, client_limit=8
    )
    with running_server(tmp_path, auth_throttle=throttle) as server:
        yield server


def logged_in(srv: RunningServer) -> Browser:
    browser = Browser(srv)
    reply = browser.login(srv.user, srv.password)
    assert reply.status == 303 and reply.headers["location"] == "/", reply.text
    return browser


def test_login_shows_the_folders_with_unread_counts(srv: RunningServer) -> None:
    deliver(srv, 2)
    browser = logged_in(srv)
    page = browser.get("/")
    assert page.status == 200
    assert "INBOX" in page.text and "Sent" in page.text and "Trash" in page.text
    assert '<span class="count">2</span>' in page.text
    assert srv.user in page.text


def test_wrong_password_is_refused_without_a_session(srv: RunningServer) -> None:
    browser = Browser(srv)
    reply = browser.login(srv.user, "wrong")
    assert reply.status == 401
    assert "Wrong address or password." in reply.text
    assert SESSION not in browser.cookies
    assert browser.get("/").headers["location"] == "/login"


def test_session_cookie_flags_and_id(srv: RunningServer) -> None:
    browser = Browser(srv)
    token = browser.get("/login").csrf()
    reply = browser.post("/login", {"csrf": token, "username": srv.user, "password": srv.password})
    (cookie,) = [c for c in reply.cookies if c.startswith(SESSION + "=")]
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)
    # 32 random bytes, base64url: 43 characters (256 bits).
    assert len(browser.cookies[SESSION]) == 43
    # A new login is a new session id (no fixation).
    again = logged_in(srv)
    assert again.cookies[SESSION] != browser.cookies[SESSION]


def test_posts_without_the_csrf_token_are_refused(srv: RunningServer) -> None:
    browser = Browser(srv)
    browser.get("/login")
    fields = {"username": srv.user, "password": srv.password}
    assert browser.post("/login", fields).status == 403
    assert browser.post("/login", {**fields, "csrf": "x" * 43}).status == 403
    assert SESSION not in browser.cookies
    # Logged in: logout and the language switch need the session's token.
    browser = logged_in(srv)
    assert browser.post("/logout", {}).status == 403
    assert browser.post("/logout", {"csrf": "forged"}).status == 403
    assert browser.post("/language", {"lang": "el"}).status == 403
    assert browser.get("/").status == 200  # still logged in


def test_logout_ends_the_session_on_the_server(srv: RunningServer) -> None:
    browser = logged_in(srv)
    stolen = dict(browser.cookies)
    page = browser.get("/")
    reply = browser.post("/logout", {"csrf": page.csrf()})
    assert reply.status == 303 and reply.headers["location"] == "/login"
    assert SESSION not in browser.cookies  # the browser was told to forget it
    thief = Browser(srv)
    thief.cookies = stolen
    assert thief.get("/").status == 303  # to /login: the old cookie is worthless
    assert thief.get("/").headers["location"] == "/login"
    assert srv.server.web is not None and len(srv.server.web.sessions) == 0


def test_idle_and_absolute_expiry(srv: RunningServer) -> None:
    assert srv.server.web is not None
    clock = task.Clock()
    srv.server.web.sessions.clock = clock
    browser = logged_in(srv)
    clock.advance(29 * 60)
    assert browser.get("/").status == 200  # used: idle time starts again
    clock.advance(29 * 60)
    assert browser.get("/").status == 200
    clock.advance(30 * 60)
    assert browser.get("/").headers["location"] == "/login"
    # Absolute: after 12 hours even a busy session ends.
    browser = logged_in(srv)
    for _ in range(12 * 3):
        assert browser.get("/").status == 200
        clock.advance(20 * 60)
    assert browser.get("/").headers["location"] == "/login"


HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize("path", ["/login", "/", "/static/webmail.css", "/no/such/page"])
def test_security_headers_on_every_response(srv: RunningServer, path: str) -> None:
    reply = Browser(srv).get(path)
    for name, value in HEADERS.items():
        assert reply.headers[name] == value
    assert reply.headers["strict-transport-security"].startswith("max-age=31536000")
    assert "unsafe-inline" not in reply.headers["content-security-policy"]
    assert reply.headers["server"] == "ourmail"  # no software version


def test_errors_are_pages_not_tracebacks(srv: RunningServer) -> None:
    browser = Browser(srv)
    missing = browser.get("/static/../app.py")
    assert missing.status == 404 and "Traceback" not in missing.text
    assert browser.get("/static/webmail.css").headers["content-type"] == "text/css; charset=utf-8"
    wrong_method = browser.request("PUT", "/login")
    assert wrong_method.status == 405 and "Traceback" not in wrong_method.text
    token = browser.get("/login").csrf()
    bad = browser.request(
        "POST",
        "/login",
        b"csrf=" + token.encode() + b"&username=%ff%fe&password=x",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert bad.status == 400


def test_an_oversized_body_is_refused(srv: RunningServer) -> None:
    browser = Browser(srv)
    reply = browser.request(
        "POST", "/login", b"x" * (65 * 1024), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert reply.status == 413


Reply = tuple[int, str | None, bytes]


def plain_http(srv: RunningServer, method: str, path: str, host: str | None = None) -> Reply:
    """A request over plain HTTP: status, Location, body."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port("http"), timeout=10)
    conn.putrequest(method, path, skip_host=host is not None)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    raw = conn.getresponse()
    try:
        return raw.status, raw.getheader("Location"), raw.read()
    finally:
        conn.close()


def test_plain_http_only_redirects_to_https(srv: RunningServer) -> None:
    web = srv.port("web")
    status, location, _ = plain_http(srv, "GET", "/login?next=%2F", "mail.example.test")
    assert (status, location) == (301, f"https://mail.example.test:{web}/login?next=%2F")
    status, location, _ = plain_http(srv, "POST", "/logout", "mail.example.test:8080")
    assert (status, location) == (308, f"https://mail.example.test:{web}/logout")
    # A path that would name another host stays on this one; a bad Host header is replaced.
    status, location, _ = plain_http(srv, "GET", "//evil.test/x", "mail.example.test")
    assert location == f"https://mail.example.test:{web}/x"
    status, location, _ = plain_http(srv, "GET", "/", "evil.test/x@y")
    assert location == f"https://mail.example.test:{web}/"
    # No cookie, no page: nothing but the redirect.
    conn = http.client.HTTPConnection("127.0.0.1", srv.port("http"), timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().getheader("Set-Cookie") is None
    conn.close()


def test_the_login_page_in_greek(srv: RunningServer) -> None:
    browser = Browser(srv)
    browser.accept_language = "el-GR,el;q=0.9,en;q=0.8"
    page = browser.get("/login")
    assert '<html lang="el">' in page.text
    assert "Σύνδεση στην αλληλογραφία σας" in page.text
    assert page.headers["content-language"] == "el"
    wrong = browser.post("/login", {"csrf": page.csrf(), "username": srv.user, "password": "x"})
    assert "Λάθος διεύθυνση ή κωδικός πρόσβασης." in wrong.text
    # The user's choice wins over the browser's.
    browser.post("/language", {"csrf": page.csrf(), "lang": "en"})
    assert "Log in to your mail" in browser.get("/login").text
    browser.accept_language = "en"
    browser.post("/language", {"csrf": page.csrf(), "lang": "el"})
    assert "Σύνδεση στην αλληλογραφία σας" in browser.get("/login").text


def test_connections_are_limited_per_client(tmp_path: Path) -> None:
    limits = attrs.evolve(Limits(), max_connections_per_ip=2)
    with running_server(tmp_path, limits=limits) as srv:
        held = [socket.create_connection(("127.0.0.1", srv.port("web"))) for _ in range(2)]
        try:
            with (
                socket.create_connection(("127.0.0.1", srv.port("web"))) as third,
                pytest.raises((ssl.SSLError, ConnectionError, OSError)),
            ):
                client_tls().wrap_socket(third)
        finally:
            for sock in held:
                sock.close()
        # Closed connections are no longer counted.
        for _ in range(50):
            with contextlib.suppress(OSError):  # ssl.SSLError too
                if Browser(srv).get("/login").status == 200:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("the limit did not go back down")


def test_the_language_switch_works_from_an_error_page(srv: RunningServer) -> None:
    browser = Browser(srv)
    missing = browser.get("/no/such/page")
    assert missing.status == 404
    assert browser.post("/language", {"csrf": missing.csrf(), "lang": "el"}).status == 303
    assert '<html lang="el">' in browser.get("/login").text
