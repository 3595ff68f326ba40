"""IMAP side by side with Dovecot (issues 5 and 13): the same folder served by ourmail and by
Debian's Dovecot on loopback, the same client operations timed against each.  Prints figures and
the ratio ourmail / Dovecot; asserts nothing.

    .venv/bin/python bench/imap_dovecot.py                          # 10,000 messages
    .venv/bin/python bench/imap_dovecot.py --messages 10000,100000  # one table per size

Both are measured warm (one SELECT first: Dovecot builds its index, ourmail loads its journal)
and over STARTTLS with the same certificate; both check an argon2id password hash of the same
cost (Dovecot's ``{ARGON2ID}`` scheme, made with ``doveadm pw``), so LOGIN is like for like.
Dovecot gets an exact copy (``cp -a``) of the Maildir ourmail wrote, taken before ourmail's own
STORE and APPEND runs; the flags and keywords the searches look for are set by the same client
commands on both sides before they are timed.
"""

from __future__ import annotations

import argparse
import datetime
import imaplib
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable

from sidebyside import USER, compare
from store import SECRET, median_time, message

KEYWORD = "$Bench"


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


def ok(result: tuple[str, object]) -> object:
    """The data of an imaplib reply; stops the run on anything but OK (a benchmark of failing
    commands would measure nothing)."""
    if result[0] != "OK":
        raise RuntimeError(f"command failed: {result!r}")
    return result[1]


def imap_date(day: datetime.date) -> str:
    return f"{day.day}-{day.strftime('%b')}-{day.year}"


def operations(port: int, n: int, appends: int) -> dict[str, float]:
    """Seconds for each operation of the issue's list, against the server on ``port``."""
    out: dict[str, float] = {}
    warm = connect(port)
    warm.select("INBOX")  # Dovecot indexes, ourmail loads: not timed
    warm.logout()

    def login() -> None:
        connect(port).logout()

    out["LOGIN (STARTTLS, argon2id)"] = median_time(login, 5)
    m = connect(port)
    out["SELECT INBOX"] = median_time(lambda: ok(m.select("INBOX")), 5)
    envelope = "(FLAGS RFC822.SIZE ENVELOPE)"
    out["UID FETCH 1:* ENVELOPE, first time"] = timed(lambda: ok(m.uid("FETCH", "1:*", envelope)))
    out["UID FETCH 1:* ENVELOPE, repeated"] = median_time(
        lambda: ok(m.uid("FETCH", "1:*", envelope)), 3
    )
    out["UID SEARCH FROM x"] = median_time(lambda: ok(m.uid("SEARCH", "FROM", "sender5")), 3)
    out["UID SEARCH BODY x (no hit)"] = median_time(lambda: ok(m.uid("SEARCH", "BODY", "zebra")), 3)
    first = max(1, n // 2 - 250)
    bodies = f"{first}:{first + 499}"
    out["UID FETCH of 500 full bodies"] = median_time(
        lambda: ok(m.uid("FETCH", bodies, "(BODY.PEEK[])")), 3
    )
    # Set up what the flag and keyword searches find (not timed): 10 % flagged, 20 % keyword.
    ok(m.uid("STORE", f"1:{max(1, n // 10)}", "+FLAGS.SILENT", "(\\Flagged)"))
    ok(m.uid("STORE", f"{n // 20 + 1}:{n // 4}", "+FLAGS.SILENT", f"({KEYWORD})"))
    modes = ["+FLAGS.SILENT", "-FLAGS.SILENT", "+FLAGS.SILENT"]
    out["UID STORE 1:* +FLAGS.SILENT (\\Seen)"] = sorted(
        timed(lambda mode=mode: ok(m.uid("STORE", "1:*", mode, "(\\Seen)"))) for mode in modes
    )[1]  # the median of setting, clearing and setting again
    today = datetime.datetime.now(datetime.UTC).date()
    searches = {
        "UID SEARCH FLAGGED SEEN": ("FLAGGED", "SEEN"),
        "UID SEARCH UNSEEN": ("UNSEEN",),
        f"UID SEARCH KEYWORD {KEYWORD}": ("KEYWORD", KEYWORD),
        "UID SEARCH SINCE today": ("SINCE", imap_date(today)),
        "UID SEARCH BEFORE today (no hit)": ("BEFORE", imap_date(today)),
        "UID SEARCH LARGER 4000": ("LARGER", "4000"),
    }
    for name, keys in searches.items():
        out[name] = median_time(lambda keys=keys: ok(m.uid("SEARCH", *keys)), 3)
    out[f"APPEND of {appends:,} messages"] = timed(
        lambda: [ok(m.append("INBOX", None, None, message(n + i))) for i in range(appends)]
    )
    m.logout()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", default="10000", help="folder sizes, comma-separated")
    ap.add_argument("--appends", type=int, default=1000, help="messages the APPEND line adds")
    args = ap.parse_args()
    if shutil.which("dovecot") is None:
        sys.exit("dovecot not found: apt-get install dovecot-imapd (scripts/test does)")
    sizes = [int(s) for s in args.messages.split(",")]
    if len(sizes) > 1:  # one process per size: the reactor cannot be started twice
        for n in sizes:
            again = ["--messages", str(n), "--appends", str(args.appends)]
            subprocess.run([sys.executable, __file__, *again], check=True)
            print()
        return
    n = sizes[0]
    compare("imap", n, lambda port: operations(port, n, args.appends), "in one folder")


if __name__ == "__main__":
    main()
