"""What one structured log event costs (issue 17 point 8): a ``smtp.transaction`` and a
``login`` event through ``twisted.logger`` to an observer that formats it as twistd's text
line or as a JSON line (ourmail/logs/jsonlog.py), written to /dev/null.  Prints microseconds
per event for each; asserts nothing.

    .venv/bin/python bench/log_events.py                  # 20,000 events of each kind
    .venv/bin/python bench/log_events.py --events 2000    # a quick look
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import FileLogObserver, LogPublisher, formatEventAsClassicLogText

from ourmail.logs import events
from ourmail.logs.jsonlog import json_line

SUMMARY = events.TransactionSummary(
    service="smtp",
    client="198.51.100.7",
    client_port=40112,
    helo="mx.sender.example",
    tls="TLSv1.3/TLS_AES_256_GCM_SHA384",
    user=None,
    sender="news@sender.example",
    recipients=["alice@example.org", "bob@example.org"],
    rcpt_refused=0,
    size=5120,
    message_id="<1234@sender.example>",
    queue_id="5f0c2a9e1b7d4c3a",
    result="accepted",
    code=250,
    reply="2.0.0 Ok: queued as 5f0c2a9e1b7d4c3a",
    filters=["spf=pass", "dkim=pass", "dmarc=pass"],
    duration=0.184,
)


def per_event(fmt: Callable[[Any], str | None], emit: Callable[[], None], n: int) -> float:
    """Microseconds per event emitted with ``emit`` and formatted with ``fmt``."""
    publisher = LogPublisher()
    with open(os.devnull, "w") as out:
        publisher.addObserver(FileLogObserver(out, fmt))
        saved = events.log.observer
        events.log.observer = publisher
        try:
            start = time.perf_counter()
            for _ in range(n):
                emit()
            return (time.perf_counter() - start) / n * 1e6
        finally:
            events.log.observer = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    n = ap.parse_args().events

    def txn() -> None:
        events.transaction(SUMMARY)

    def login() -> None:
        events.login("imap", "203.0.113.9", "bob@example.org", "LOGIN", events.BAD_PASSWORD)

    for name, emit in (("smtp.transaction", txn), ("login", login)):
        text = per_event(formatEventAsClassicLogText, emit, n)
        js = per_event(json_line, emit, n)
        print(f"{name:17} text {text:6.1f} us/event   json {js:6.1f} us/event   ({n:,} events)")


if __name__ == "__main__":
    main()
