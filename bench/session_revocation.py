"""What ending open sessions on account changes costs (docs/admin-console.md#ending-open-sessions):

* an IMAP NOOP round trip (STARTTLS, logged in) with the session revoker running and with it
  stopped: the revoker adds nothing to a command's path, so the two should agree;
* one idle tick's probe (a ``stat`` of ``accounts.json``, in a worker thread);
* the probe after a change (reading the whole accounts file again, in the worker thread);
* one comparison of ``--sessions`` open sessions (distinct users): in all, and the part on the
  reactor thread (it runs only when the file changed, and every 30 s).

Prints figures; asserts nothing.

    .venv/bin/python bench/session_revocation.py --dir /tmp/rv --users 20000 --sessions 2000
"""

from __future__ import annotations

import argparse
import imaplib
import shutil
import ssl
import statistics
import time
from pathlib import Path

from harness import start_server, stop_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.auth.accounts import AccountDB
from ourmail.auth.login import Session
from ourmail.auth.passwords import hash_password
from ourmail.auth.revocation import SessionRevoker

PASSWORD = "bench password 1234"  # noqa: S105 - a throwaway account on loopback
USER = "bench@bench.test"
HASH = "$argon2id$v=19$m=65536,t=3,p=4$" + "a" * 22 + "$" + "b" * 43


def noop_us(port: int, rounds: int) -> float:
    """Median microseconds of one NOOP round trip, in batches of 100."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.starttls(ctx)
    imap.login(USER, PASSWORD)
    imap.select("INBOX")
    batches = []
    for _ in range(max(1, rounds // 100)):
        start = time.perf_counter()
        for _ in range(100):
            imap.noop()
        batches.append((time.perf_counter() - start) / 100 * 1e6)
    imap.logout()
    return statistics.median(batches)


def on_reactor_ms(call: object) -> float:
    """Milliseconds ``call()`` takes on the reactor thread."""

    def timed() -> float:
        start = time.perf_counter()
        call()  # type: ignore[operator]
        return (time.perf_counter() - start) * 1000

    result: float = blockingCallFromThread(reactor, timed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=Path, help="emptied, then used")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=2_000)
    parser.add_argument("--noops", type=int, default=2_000)
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    data = args.dir / "data"
    data.mkdir(parents=True)
    (data / "accounts.json").write_text(
        '{"domains": [], "users": {'
        + ", ".join(f'"u{n:07d}@bench.test": {{"password": "{HASH}"}}' for n in range(args.users))
        + "}}"
    )
    db = AccountDB(data)
    db.add_user(USER, hash_password(PASSWORD))
    size = (data / "accounts.json").stat().st_size
    server, port = start_server(data, "imap")
    try:
        revoker = _revoker_of(server)
        names = [f"u{n:07d}@bench.test" for n in range(min(args.sessions, args.users))]

        def register() -> None:
            for name in names:
                revoker.register(Session(object(), None), name, revoker.stamp(name), "imap")

        blockingCallFromThread(reactor, register)
        on = noop_us(port, args.noops)
        blockingCallFromThread(reactor, revoker.stopService)
        off = noop_us(port, args.noops)
        probe = []
        for _ in range(200):
            start = time.perf_counter()
            server.accounts.stamp()
            probe.append((time.perf_counter() - start) * 1e6)
        start = time.perf_counter()
        AccountDB(data).stamp()  # a fresh view: the whole file read, as after a change
        reread = (time.perf_counter() - start) * 1000
        compare = statistics.median(on_reactor_ms(revoker.compare) for _ in range(5))
        walls = []
        for _ in range(5):
            start = time.perf_counter()
            blockingCallFromThread(reactor, revoker.compare)
            walls.append((time.perf_counter() - start) * 1000)
        print(f"accounts: {args.users + 1} users, accounts.json {size / 1e6:.1f} MB")
        print(f"IMAP NOOP round trip, revoker running: {on:.0f} us (median of batches)")
        print(f"IMAP NOOP round trip, revoker stopped: {off:.0f} us")
        print(f"idle tick probe (stat), off the reactor: {statistics.median(probe):.1f} us")
        print(f"probe after a change (file read again), off the reactor: {reread:.0f} ms")
        print(
            f"comparing {len(revoker)} open sessions: {statistics.median(walls):.0f} ms in all "
            f"(the stamps read in a worker thread), {compare:.1f} ms of it on the reactor"
        )
    finally:
        stop_server(server)


def _revoker_of(server: object) -> SessionRevoker:
    """The running server's revoker (a service of its tree)."""
    for service in server.service:  # type: ignore[attr-defined]
        if isinstance(service, SessionRevoker):
            return service
    raise SystemExit("this server has no session revoker")


if __name__ == "__main__":
    main()
