"""IMAP side by side with Dovecot (issue 5): the same folder served by ourmail and by Debian's
Dovecot on loopback, the same client operations timed against each.  Prints figures and the
ratio ourmail / Dovecot; asserts nothing.

    .venv/bin/python bench/imap_dovecot.py                      # 10,000 messages
    .venv/bin/python bench/imap_dovecot.py --messages 100000

Both are measured warm (one SELECT first: Dovecot builds its index, ourmail loads its journal)
and over STARTTLS with the same certificate.  Dovecot gets an exact copy (``cp -a``) of the
Maildir ourmail wrote, taken before ourmail's own STORE and APPEND runs.
"""

from __future__ import annotations

import argparse
import imaplib
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import start_server, stop_server
from peers.dovecot import dovecot
from store import SECRET, deliver, median_time, message

from ourmail.auth.passwords import hash_password

USER = "user@bench.test"


def connect(port: int) -> imaplib.IMAP4:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    m = imaplib.IMAP4("127.0.0.1", port)
    m.starttls(ssl_context=ctx)
    m.login(USER, SECRET)
    return m


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def operations(port: int, n: int) -> dict[str, float]:
    """Seconds for each operation of the issue's list, against the server on ``port``."""
    out: dict[str, float] = {}
    warm = connect(port)
    warm.select("INBOX")  # Dovecot indexes, ourmail loads: not timed
    warm.logout()

    def login_select() -> None:
        m = connect(port)
        m.select("INBOX")
        m.logout()

    out["LOGIN + SELECT (STARTTLS)"] = median_time(login_select, 5)
    m = connect(port)
    m.select("INBOX")
    out["UID FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)"] = median_time(
        lambda: m.uid("FETCH", "1:*", "(FLAGS RFC822.SIZE ENVELOPE)"), 3
    )
    out["UID SEARCH FROM x"] = median_time(lambda: m.uid("SEARCH", "FROM", "sender5"), 3)
    step = max(1, n // 500)
    uids = [str(u) for u in range(1, n + 1, step)][:500]
    out["500 full-body fetches"] = timed(lambda: [m.uid("FETCH", u, "(BODY.PEEK[])") for u in uids])
    out["STORE 1:* +FLAGS (\\Seen)"] = timed(lambda: m.store("1:*", "+FLAGS", "(\\Seen)"))
    out["APPEND of 1,000 messages"] = timed(
        lambda: [m.append("INBOX", None, None, message(n + i)) for i in range(1000)]
    )
    m.logout()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    args = ap.parse_args()
    if shutil.which("dovecot") is None:
        sys.exit("dovecot not found: apt-get install dovecot-imapd (scripts/test does)")
    base = Path(tempfile.mkdtemp(prefix="ourmail-imap-bench-", dir="/var/tmp"))
    server, port = start_server(base / "data", "imap")
    server.accounts.add_user(USER, hash_password(SECRET))
    took = deliver(server.store, [USER], args.messages, 64)
    maildir = server.store.shards.user_dir(USER)
    snapshot = base / "snapshot"
    subprocess.run(["cp", "-a", str(maildir), str(snapshot)], check=True)
    ours = operations(port, args.messages)
    tls = (base / "data" / "tls" / "cert.pem", base / "data" / "tls" / "key.pem")
    with dovecot(snapshot, USER, SECRET, tls, argon2=True) as (dport, _):
        theirs = operations(dport, args.messages)
    print(f"{args.messages} messages of 4 KB in one folder (delivered in {took:.1f} s)")
    print(f"{'operation':<46}{'ourmail':>10}{'Dovecot':>10}{'ratio':>8}")
    for name, t in ours.items():
        d = theirs[name]
        print(f"{name:<46}{t * 1000:>8.0f}ms{d * 1000:>8.0f}ms{t / d:>7.1f}x")
    stop_server(server)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
