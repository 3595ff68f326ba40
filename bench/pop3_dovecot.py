"""POP3 side by side with Dovecot (issue 6): the same 10,000-message maildrop served by ourmail
and by Debian's Dovecot POP3 on loopback; login + UIDL, and RETR of every message.  Prints
figures and the ratio ourmail / Dovecot; asserts nothing.

    .venv/bin/python bench/pop3_dovecot.py
    .venv/bin/python bench/pop3_dovecot.py --messages 50000

Both over STLS with the same certificate and an argon2id password hash of the same cost, both
warm (one login first: Dovecot builds its index, ourmail loads its journal).  Dovecot gets an
exact copy (``cp -a``) of the Maildir ourmail wrote.
"""

from __future__ import annotations

import argparse
import poplib
import ssl
import sys
import time
from pathlib import Path

from sidebyside import USER, compare
from store import SECRET, median_time


def connect(port: int) -> poplib.POP3:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    p = poplib.POP3("127.0.0.1", port)
    p.stls(context=ctx)
    p.user(USER)
    p.pass_(SECRET)
    return p


def operations(port: int) -> dict[str, float]:
    connect(port).quit()  # warm

    def login_uidl() -> None:
        p = connect(port)
        p.uidl()
        p.quit()

    out = {"login + UIDL": median_time(login_uidl, 5)}
    p = connect(port)
    count = p.stat()[0]
    t = time.perf_counter()
    for n in range(1, count + 1):
        p.retr(n)
    out[f"RETR of all {count} messages"] = time.perf_counter() - t
    p.quit()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    args = ap.parse_args()
    if not Path("/usr/lib/dovecot/pop3").exists():
        sys.exit("Dovecot POP3 not found: apt-get install dovecot-pop3d (scripts/test does)")
    compare("pop3", args.messages, operations, "in the INBOX")


if __name__ == "__main__":
    main()
