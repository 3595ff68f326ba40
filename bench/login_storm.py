"""A reconnect storm (issue 13): 2,000 IMAP clients log in over TLS to the same few accounts and
log out, 100 at a time, with the login cache on and off.  Prints figures; asserts nothing.

    .venv/bin/python bench/login_storm.py                       # 2,000 clients, both sides
    .venv/bin/python bench/login_storm.py --clients 300 --rounds 2
    .venv/bin/python bench/login_storm.py --sides on            # the cache only

Each side runs in its own server process (this script with ``--serve``); the clients run in a
child process (asyncio), spread over 50 loopback source addresses so the per-address limit does
not apply.  With the cache off every login is an argon2id verification; with it on, one per
account and password (logins arriving during that check wait for it).  Sides alternate, so a
busy machine slows both alike: compare the ratio, and run it more than once.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENT = r"""
import asyncio, json, ssl, sys, time

port, n, users, concurrency, password = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
gate = asyncio.Semaphore(concurrency)
ok = failed = 0
login_times = []

async def one(i):
    global ok, failed
    async with gate:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, local_addr=(f"127.0.1.{1 + i % 50}", 0))
            await reader.readline()
            started = time.perf_counter()
            writer.write(f'a LOGIN user{i % users}@bench.test "{password}"\r\n'.encode())
            while not (login := await reader.readline()).startswith(b"a "):
                if not login:
                    raise EOFError
            login_times.append(time.perf_counter() - started)
            writer.write(b"b LOGOUT\r\n")
            while not (line := await reader.readline()).startswith(b"b "):
                if not line:
                    raise EOFError
            writer.close()
            if login.startswith(b"a OK") and line.startswith(b"b OK"):
                ok += 1
            else:
                failed += 1
        except Exception:
            failed += 1

async def main():
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    login_times.sort()
    print(json.dumps({
        "ok": ok, "failed": failed, "seconds": elapsed,
        "login_median": login_times[len(login_times) // 2] if login_times else None,
        "login_p99": login_times[int(len(login_times) * 0.99)] if login_times else None,
    }), flush=True)

asyncio.run(main())
"""


def serve(ttl: float, users: int, clients: int, concurrency: int) -> None:
    """One side: a server with the cache's ``ttl`` (0: off), then one storm against it."""
    import attrs
    from harness import start_server, stop_server
    from twisted.internet import reactor
    from twisted.internet.threads import blockingCallFromThread

    from ourmail.auth.passwords import hash_password
    from ourmail.config import Limits, LoginCacheSettings

    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as tmp:
        server, port = start_server(
            Path(tmp),
            "imaps",
            auth_cache=LoginCacheSettings(ttl=ttl),
            limits=attrs.evolve(Limits(), max_connections_per_ip=1000),
        )
        encoded = hash_password(password)
        for n in range(users):
            blockingCallFromThread(
                reactor, server.accounts.add_user, f"user{n}@bench.test", encoded
            )
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, str(port), str(clients), str(users),
             str(concurrency), password],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        stop_server(server)
    print(out.stdout.strip(), flush=True)


def side(ttl: float, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--serve", str(ttl), "--clients", str(args.clients),
         "--users", str(args.users), "--concurrency", str(args.concurrency)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--users", type=int, default=5, help="accounts the clients log in to")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sides", choices=["both", "on", "off"], default="both")
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.users, args.clients, args.concurrency)
        return
    sides = {"both": [("on", 60.0), ("off", 0.0)], "on": [("on", 60.0)], "off": [("off", 0.0)]}
    print(
        f"{args.clients} IMAPS clients, {args.concurrency} at a time, "
        f"{args.users} accounts: LOGIN then LOGOUT"
    )
    for round_ in range(1, args.rounds + 1):
        seconds: dict[str, float] = {}
        for name, ttl in sides[args.sides]:
            started = time.perf_counter()
            r = side(ttl, args)
            seconds[name] = r["seconds"]
            print(
                f"round {round_} cache {name:3}: {r['seconds']:7.1f} s for the storm "
                f"({r['ok'] / r['seconds']:6.1f} logins/s; login median "
                f"{r['login_median'] * 1000:.0f} ms, p99 {r['login_p99'] * 1000:.0f} ms; "
                f"{r['ok']} ok, {r['failed']} failed; {time.perf_counter() - started:.0f} s "
                "with start-up)",
                flush=True,
            )
        if len(seconds) == 2:
            print(f"round {round_}: cache off / on = {seconds['off'] / seconds['on']:.1f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
