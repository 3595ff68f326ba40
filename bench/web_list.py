"""The first page of a 100,000-message folder in the webmail (issue 16's benchmark): the time
the server takes to answer ``GET /mail?folder=INBOX`` sorted by date (newest first) and by
subject, cold (the first request after a restart) and warm, over one kept-alive HTTPS
connection on loopback (so the TLS handshake is not counted).  Prints figures; asserts
nothing.  Target: under 100 ms.

    .venv/bin/python bench/web_list.py
    .venv/bin/python bench/web_list.py --messages 20000 --runs 50 --restarts 2

The folder is filled through the store (``IFolder.append``, durable group commits), not SMTP.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from harness import start_server, stop_server
from twisted.internet import defer, reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.auth.passwords import hash_password
from ourmail.service import Server

SECRET = "benchmark password"  # noqa: S105 - a throwaway account on loopback
USER = "list@bench.test"
#: An account with an empty mailbox: its first page after a restart compiles the templates,
#: so that USER's first page measures only the cost of USER's folders.
OTHER = "warm@bench.test"
WORDS = ["budget", "meeting", "Re: minutes", "Fwd: invoice", "Καλημέρα", "report", "holiday",
         "Re: Re: plans", "ticket", "newsletter", "contract", "[list] notice"]  # fmt: skip
START = 1_700_000_000.0


def message(i: int) -> bytes:
    subject = f"{WORDS[i * 7 % len(WORDS)]} {i * 7919 % 100_003}"
    return (
        f"From: Sender {i % 997} <sender{i % 997}@example.net>\r\nTo: {USER}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{i}@bench.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Message number {i}.\r\n"
    ).encode()


def fill(server: Server, count: int, inflight: int) -> float:
    """Append ``count`` messages to the user's INBOX; the seconds it took."""
    done: defer.Deferred[None] = defer.Deferred()
    folder = server.store.user(USER).folder("INBOX")
    sent = finished = 0

    def one() -> None:
        nonlocal sent
        if sent < count:
            i, sent = sent, sent + 1
            # Internal dates mostly ascending, with some out of order (IMAP APPEND, moves).
            when = START + i * 300 - (i % 13) * 2000
            folder.append(message(i), ("\\Seen",) if i % 4 else (), when).addCallbacks(
                ok, done.errback
            )

    def ok(_: object) -> None:
        nonlocal finished
        finished += 1
        if finished == count:
            done.callback(None)
        else:
            one()

    def start() -> defer.Deferred[None]:
        for _ in range(min(inflight, count)):
            one()
        return done

    t = time.perf_counter()
    blockingCallFromThread(reactor, start)
    return time.perf_counter() - t


class Client:
    """One browser over one kept-alive HTTPS connection."""

    def __init__(self, port: int) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=120)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body, headers)
        response = self.conn.getresponse()
        data = response.read()
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response.status, data

    def login(self, user: str = USER) -> None:
        _, page = self.request("GET", "/login")
        found = re.search(rb'name="csrf" value="([^"]+)"', page)
        assert found
        form = {"csrf": found.group(1).decode(), "username": user, "password": SECRET}
        status, _ = self.request("POST", "/login", urlencode(form).encode())
        assert status == 303, status

    def timed(self, path: str, rows: int = 50) -> float:
        """Milliseconds to answer ``path`` (a 200 with ``rows`` rows)."""
        t = time.perf_counter()
        status, page = self.request("GET", path)
        ms = (time.perf_counter() - t) * 1000
        assert status == 200 and page.count(b'<tr class="row') == rows, (status, page[:300])
        return ms


SORTS = {
    "date, newest first": "/mail?folder=INBOX",
    "subject, A to Z": "/mail?folder=INBOX&sort=subject",
}


def figures(times: list[float]) -> str:
    p95 = statistics.quantiles(times, n=20)[-1] if len(times) >= 2 else times[0]
    return f"median {statistics.median(times):6.1f} ms, p95 {p95:6.1f} ms (n={len(times)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=30, help="warm requests per order")
    ap.add_argument("--restarts", type=int, default=3, help="cold requests per order")
    ap.add_argument("--inflight", type=int, default=128)
    ap.add_argument("--dir", help="where to keep the data (default: a temporary directory); "
                    "the mail of an earlier run there is used again")  # fmt: skip
    args = ap.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="ourmail-bench-", dir="/var/tmp"))
    data = base / "data"
    print(f"data in {base}; {len(os.sched_getaffinity(0))} cores")

    if (data / "mail").exists():
        print("reusing the mail already there (--dir of an earlier run)")
    else:
        server, port = start_server(data, "web")
        server.accounts.add_user(USER, hash_password(SECRET))
        server.accounts.add_user(OTHER, hash_password(SECRET))
        secs = fill(server, args.messages, args.inflight)
        print(f"filled INBOX with {args.messages} messages in {secs:.1f} s")
        stop_server(server)

    cold: dict[str, list[float]] = {name: [] for name in SORTS}
    first: list[float] = []
    all_cold: list[float] = []
    for _ in range(args.restarts):
        server, port = start_server(data, "web")
        client = Client(port)
        client.login()
        all_cold.append(client.timed(SORTS["date, newest first"]))
        client.conn.close()
        stop_server(server)
        for name, path in SORTS.items():
            server, port = start_server(data, "web")
            # The process's first list page compiles the templates and loads the language
            # data: another user's, so that the INBOX's figure is that of its own folders.
            other = Client(port)
            other.login(OTHER)
            first.append(other.timed("/mail?folder=INBOX", rows=0))
            other.conn.close()
            client = Client(port)
            client.login()  # the login itself does not open the INBOX's index
            cold[name].append(client.timed(path))
            client.conn.close()
            stop_server(server)

    server, port = start_server(data, "web")
    client = Client(port)
    client.login()
    print(f"\n== GET first page of {args.messages} messages, server time on loopback ==")
    print(f"{'(first list page of the process: templates, an empty mailbox)':20} {figures(first)}")
    print(f"{'(first list page of the process: the INBOX by date)':20} {figures(all_cold)}")
    for name, path in SORTS.items():
        client.timed(path)  # the order is made once, then kept
        warm = [client.timed(path) for _ in range(args.runs)]
        print(f"{name:20} cold: {figures(cold[name])} {[round(x) for x in cold[name]]}")
        print(f"{'':20} warm: {figures(warm)}")
    last = f"/mail?folder=INBOX&page={args.messages // 50}"
    print(f"{'last page, by date':20} warm: {figures([client.timed(last) for _ in range(10)])}")
    client.conn.close()
    stop_server(server)
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
