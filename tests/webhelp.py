"""Driving the webmail from tests: a small HTTPS client with a cookie jar (stdlib http.client
over TLS to the server's self-signed certificate), the way a browser talks to it."""

from __future__ import annotations

import http.client
import re
import socket
from urllib.parse import urlencode

from conftest import RunningServer, client_tls


class Response:
    """A finished response: status, headers (lower-case names; Set-Cookie as a list), body."""

    def __init__(self, raw: http.client.HTTPResponse) -> None:
        self.status = raw.status
        self.headers = {k.lower(): v for k, v in raw.getheaders()}
        self.cookies = raw.headers.get_all("Set-Cookie") or []
        self.body = raw.read()
        self.text = self.body.decode("utf-8", "replace")

    def csrf(self) -> str:
        """The page's CSRF token (its hidden form field)."""
        m = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert m, self.text
        return m.group(1)


class Browser:
    """One browser: keeps the cookies the server sets (by name) and sends them back."""

    def __init__(self, srv: RunningServer, source: str = "127.0.0.1") -> None:
        self.port = srv.port("web")
        self.source = source
        self.cookies: dict[str, str] = {}
        self.accept_language: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPSConnection(
            "127.0.0.1",
            self.port,
            context=client_tls(),
            timeout=30,
            source_address=(self.source, 0),
        )
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.accept_language:
            sent["Accept-Language"] = self.accept_language
        try:
            conn.request(method, path, body=body, headers=sent)
            response = Response(conn.getresponse())
        finally:
            conn.close()
        for cookie in response.cookies:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in cookie.lower() or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, fields: dict[str, str]) -> Response:
        return self.request(
            "POST",
            path,
            urlencode(fields).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )

    def login(self, user: str, password: str) -> Response:
        """Open the login page and post the form."""
        token = self.get("/login").csrf()
        return self.post("/login", {"csrf": token, "username": user, "password": password})


def imap_login(
    srv: RunningServer, password: str, source: str = "127.0.0.1", user: str | None = None
) -> bytes:
    """A LOGIN over IMAPS from the loopback address ``source``; the tagged reply."""
    sock = socket.create_connection(("127.0.0.1", srv.port("imaps")), source_address=(source, 0))
    with client_tls().wrap_socket(sock) as tls:
        f = tls.makefile("rb")
        f.readline()
        tls.sendall(f'a LOGIN {user or srv.user} "{password}"\r\n'.encode())
        while not (line := f.readline()).startswith(b"a "):
            pass
        return line
