"""Store benchmark (issue 3): durable delivery rate, and IMAP SELECT / FETCH / STORE / EXPUNGE
cost as a folder grows.  Prints figures; asserts nothing.

    .venv/bin/python bench/store.py                      # full run: 100,000 messages
    .venv/bin/python bench/store.py --messages 10000 --users 100 --sizes 1000,10000

Deliveries go through the store API with ``--inflight`` deliveries outstanding at once (as
concurrent SMTP sessions would); each is acknowledged only once its file and directory entry
are durable.  The IMAP figures are measured with imaplib against the real server on loopback.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import resource
import shutil
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import start_server, stop_server
from twisted.internet import defer, reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.auth.passwords import hash_password
from ourmail.store.userstore import MaildirStore

SECRET = "benchmark password"  # noqa: S105 - a throwaway account on loopback


def message(i: int, size: int = 4096) -> bytes:
    head = (
        f"From: Sender {i % 97} <sender{i % 97}@example.net>\r\nTo: user@bench.test\r\n"
        f"Subject: benchmark message {i}\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{i}@bench.test>\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\r\n"
    return head + line * ((size - len(head)) // len(line))


def deliver(store: MaildirStore, addresses: list[str], count: int, inflight: int) -> float:
    """Deliver ``count`` messages round-robin to ``addresses``; returns the seconds taken."""
    done: defer.Deferred[None] = defer.Deferred()
    users = [store.user(a) for a in addresses]
    sent = finished = 0

    def one() -> None:
        nonlocal sent
        if sent < count:
            i, sent = sent, sent + 1
            users[i % len(users)].deliver(message(i)).addCallbacks(ok, done.errback)

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


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def client(port: int, address: str) -> imaplib.IMAP4:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    m = imaplib.IMAP4("127.0.0.1", port)
    m.starttls(ssl_context=ctx)
    m.login(address, SECRET)
    m.select("INBOX")
    return m


def imap_figures(port: int, address: str, n: int) -> str:
    m = client(port, address)
    select = median_time(lambda: m.select("INBOX"), 5)
    flags = median_time(lambda: m.uid("FETCH", "1:*", "(FLAGS)"), 3)
    envelope = median_time(lambda: m.uid("FETCH", "1:*", "(FLAGS RFC822.SIZE ENVELOPE)"), 3)
    search = median_time(lambda: m.uid("SEARCH", "FROM", "sender5"), 3)
    m.logout()
    cells = [
        f"SELECT {select * 1000:6.1f} ms",
        f"UID FETCH 1:* (FLAGS) {flags * 1000:6.0f} ms",
        f"(FLAGS RFC822.SIZE ENVELOPE) {envelope * 1000:6.0f} ms",
        f"UID SEARCH FROM {search * 1000:5.0f} ms",
    ]
    return f"{n:>7} msgs: " + " | ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--dir", help="where to keep the data (default: a temporary directory)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    base = Path(args.dir or tempfile.mkdtemp(prefix="ourmail-bench-", dir="/var/tmp"))
    server, port = start_server(base / "data", "imap")

    print(f"data in {base}; {len(os.sched_getaffinity(0))} cores")
    print(f"\n== durable delivery of 4 KB messages, {args.inflight} in flight ==")
    folders = {}
    for n in sorted({*sizes, args.messages}):
        address = f"f{n}@bench.test"
        server.accounts.add_user(address, hash_password(SECRET))
        secs = deliver(server.store, [address], n, args.inflight)
        folders[n] = address
        print(f"{n:>7} messages into one folder: {n / secs:6.0f} msg/s ({secs:.1f} s)")
    addresses = [f"u{i}@bench.test" for i in range(args.users)]
    secs = deliver(server.store, addresses, args.messages, args.inflight)
    rate = args.messages / secs
    print(
        f"{args.messages:>7} messages across {args.users} users: {rate:6.0f} msg/s ({secs:.1f} s)"
    )

    print("\n== IMAP over loopback, warm (folder loaded), median of repeated runs ==")
    for n in sizes:
        print(imap_figures(port, folders[n], n))

    n = max(sizes)
    m = client(port, folders[n])
    t = time.perf_counter()
    m.store("1:*", "+FLAGS.SILENT", "(\\Seen)")
    store_secs = time.perf_counter() - t
    t = time.perf_counter()
    m.store(f"1:{n // 2}", "+FLAGS.SILENT", "(\\Deleted)")
    m.expunge()
    expunge_secs = time.perf_counter() - t
    m.logout()
    print(f"\n{n} msgs: STORE 1:* +FLAGS.SILENT (\\Seen) {store_secs:.2f} s; "
          f"STORE \\Deleted + EXPUNGE of half {expunge_secs:.2f} s")  # fmt: skip
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS (server and client in one process): {rss:.0f} MB")
    stop_server(server)
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
