"""Many IDLE connections in one server process (issue 5): memory per idle authenticated
connection, and whether every one of them hears of new mail.  Prints figures; asserts nothing.

    .venv/bin/python bench/imap_idle.py                  # 2,000 connections over IMAPS
    .venv/bin/python bench/imap_idle.py --connections 5000

The clients run in a child process (asyncio), spread over 50 loopback source addresses so the
default per-address limit applies; 20 users hold 1/20th of the connections each.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import start_server, stop_server
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.threads import blockingCallFromThread

from ourmail.auth.passwords import hash_password

USERS = 20
PASSWORD = secrets.token_urlsafe(16)

CLIENT = r"""
import asyncio, json, ssl, sys

port, n, users, password = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ready = asyncio.Event()
setting_up = asyncio.Semaphore(100)  # like clients starting over a few minutes, not at once
idling = failed = 0
notified = 0

async def one(i):
    global idling, notified, failed
    source = f"127.0.1.{1 + i % 50}"
    try:
        async with setting_up:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, local_addr=(source, 0))
            await reader.readline()
            user = f"user{i % users}@bench.test"
            writer.write(
                f'a LOGIN {user} "{password}"\r\nb SELECT INBOX\r\nc IDLE\r\n'.encode())
            while not (await reader.readline()).startswith(b"+"):
                pass
    except Exception:
        failed += 1
        if idling + failed == n:
            ready.set()
        return
    idling += 1
    if idling + failed == n:
        ready.set()
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.endswith(b"EXISTS\r\n"):
            notified += 1
            return

async def main():
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await ready.wait()
    print(json.dumps({"idling": idling, "failed": failed}), flush=True)
    sys.stdin.readline()  # the parent delivers now
    await asyncio.wait(tasks, timeout=5)
    print(json.dumps({"notified": notified}), flush=True)

asyncio.run(main())
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=2000)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ourmail-idle-bench-", dir="/var/tmp"))
    server, port = start_server(base / "data", "imaps")
    hashed = hash_password(PASSWORD)
    for u in range(USERS):
        server.accounts.add_user(f"user{u}@bench.test", hashed)
    before = rss_mb()
    started = time.perf_counter()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(port), str(args.connections), str(USERS), PASSWORD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None and client.stdout is not None
    state = json.loads(client.stdout.readline())
    idling, failed = state["idling"], state["failed"]
    setup = time.perf_counter() - started
    time.sleep(2.0)
    during = rss_mb()
    # One new message per user, delivered through the store as SMTP would.
    message = b"Subject: wake up\r\n\r\nnew mail\r\n"
    sent = time.perf_counter()
    blockingCallFromThread(
        reactor,
        lambda: DeferredList(
            [server.store.user(f"user{u}@bench.test").deliver(message) for u in range(USERS)]
        ),
    )
    client.stdin.write("go\n")
    client.stdin.flush()
    notified = json.loads(client.stdout.readline())["notified"]
    reach = time.perf_counter() - sent
    client.wait(30)
    print(f"{idling} IMAPS connections logged in, SELECTed INBOX and IDLE ({USERS} users); "
          f"{failed} failed")  # fmt: skip
    print(f"set-up (TLS, LOGIN with argon2id, SELECT, IDLE): {setup:.1f} s")
    print(f"server RSS: {before:.0f} MB before, {during:.0f} MB with all idling")
    print(f"memory per idle connection: {(during - before) * 1024 / idling:.0f} KB")
    print(f"new mail reached {notified} of {idling} IDLE sessions within {reach:.1f} s")
    stop_server(server)
    shutil.rmtree(base, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    main()
