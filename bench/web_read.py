"""The message page in the webmail, end to end (issue 16's benchmark: "opening a 10 MB message
under 300 ms"): a running ourmail with only the ``web`` listener, the messages put in the
store, and the time from request to last byte over HTTPS on loopback for ``GET /message`` and
the frames of its HTML bodies, as a browser asks for them, and for downloading the
attachment.  Medians of ``--runs``.  Prints figures; asserts nothing.

    .venv/bin/python bench/web_read.py
    .venv/bin/python bench/web_read.py --megabytes 25 --runs 9
"""

from __future__ import annotations

import argparse
import base64
import html
import http.client
import os
import re
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from harness import start_server, stop_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from web_message import HEAD, attachment_message, html_message, many_parts_message

from ourmail.auth.passwords import hash_password

USER, PASSWORD = "reader@bench.test", "bench password"


def newsletter_with_attachment(size: int) -> bytes:
    """A 30 KB HTML newsletter (tables, styles, remote images) and a large attachment."""
    row = (
        '<tr><td style="padding:8px;color:#333">Καλημέρα σας, <b>news</b> item</td>'
        '<td><img src="https://cdn.example/pic.png" width="60"></td></tr>\r\n'
    )
    page = f'<html><body><table width="600">{row * 200}</table></body></html>'
    payload = os.urandom((size - 40_000) * 3 // 4)
    return (
        HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        + page.encode()
        + b"\r\n--b\r\nContent-Type: application/zip\r\n"
        b"Content-Disposition: attachment; filename=report.zip\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(payload).replace(b"\n", b"\r\n")
        + b"--b--\r\n"
    )


class Client:
    """A keep-alive HTTPS connection with the session cookie."""

    def __init__(self, port: int) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response.status, response.read()

    def login(self) -> None:
        _, page = self.request("GET", "/login")
        m = re.search(rb'name="csrf" value="([^"]+)"', page)
        assert m
        form = {"csrf": m.group(1).decode(), "username": USER, "password": PASSWORD}
        status, _ = self.request("POST", "/login", urlencode(form).encode())
        assert status == 303, status


def open_message(client: Client, uid: int) -> tuple[float, int, int]:
    """The page and its frames, as a browser loads them: milliseconds, octets, frames."""
    start = time.perf_counter()
    status, page = client.request("GET", "/message?" + urlencode({"folder": "INBOX", "uid": uid}))
    assert status == 200, status
    size = len(page)
    frames = [html.unescape(u) for u in re.findall(r'<iframe[^>]* src="([^"]+)"', page.decode())]
    for url in frames:
        status, body = client.request("GET", url)
        assert status == 200, status
        size += len(body)
    return (time.perf_counter() - start) * 1000, size, len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    size = args.megabytes * 1_000_000
    shapes = (
        ("text + base64 attachment", attachment_message),
        ("HTML newsletter + attachment", newsletter_with_attachment),
        ("one quoted-printable HTML", html_message),
        ("1000 attachments", many_parts_message),
    )
    with tempfile.TemporaryDirectory() as tmp:
        server, port = start_server(Path(tmp), "web")
        try:
            server.accounts.add_user(USER, hash_password(PASSWORD))
            store = server.store.user(USER)
            uids = [
                blockingCallFromThread(reactor, store.deliver, make(size)) for _, make in shapes
            ]
            client = Client(port)
            client.login()
            print(f"{'message':<32}{'MB':>6}{'frames':>8}{'page+frames ms':>16}{'p95 ms':>8}")
            for (name, _), uid in zip(shapes, uids, strict=True):
                open_message(client, uid)  # the first opening also sets \Seen
                times = [open_message(client, uid)[0] for _ in range(args.runs)]
                _, _, frames = open_message(client, uid)
                times.sort()
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                print(
                    f"{name:<32}{size / 1e6:>6.0f}{frames:>8}"
                    f"{statistics.median(times):>16.0f}{p95:>8.0f}"
                )
            query = urlencode({"folder": "INBOX", "uid": uids[0], "part": "2"})
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                status, body = client.request("GET", f"/message/part?{query}")
                times.append((time.perf_counter() - start) * 1000)
                assert status == 200, status
            print(
                f"download of the attachment ({len(body) / 1e6:.1f} MB decoded): "
                f"{statistics.median(times):.0f} ms"
            )
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
