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
import sys
import time
from collections.abc import Callable

from sidebyside import USER, compare
from store import SECRET, median_time, message


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
    compare("imap", args.messages, lambda port: operations(port, args.messages), "in one folder")


if __name__ == "__main__":
    main()
