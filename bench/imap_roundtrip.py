"""IMAP per-command cost side by side with Dovecot: commands that find nothing or one message,
repeated, so the figure is the round trip and the server's fixed cost per command (TLS, parse,
catch-up, reply), not the work.  Prints medians and ratios; asserts nothing.

    .venv/bin/python bench/imap_roundtrip.py                  # 2,000 messages, 300 repeats
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from imap_dovecot import connect, ok
from sidebyside import compare


def operations(port: int, repeats: int) -> dict[str, float]:
    m = connect(port)
    ok(m.select("INBOX"))
    ok(m.uid("STORE", "1:*", "+FLAGS.SILENT", "(\\Seen)"))  # UNSEEN then finds nothing
    commands: dict[str, Callable[[], object]] = {
        "NOOP": m.noop,
        "UID SEARCH UNSEEN (no hit)": lambda: ok(m.uid("SEARCH", "UNSEEN")),
        "UID SEARCH FLAGGED SEEN (no hit)": lambda: ok(m.uid("SEARCH", "FLAGGED", "SEEN")),
        "UID FETCH one (FLAGS)": lambda: ok(m.uid("FETCH", "5", "(FLAGS)")),
    }
    out = {}
    for name, command in commands.items():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            command()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    m.logout()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    compare("imap", args.messages, lambda port: operations(port, args.repeats), "per command")


if __name__ == "__main__":
    main()
