"""What the out-of-office reply costs (issue 16 point 9), without a server: the rules on one
delivered message's header (the work delivery's responder does on the reactor for every
INBOX copy of a user who is away), building one reply, and one claim in the SQLite record of
replies (done in a thread, once per reply that passes the rules).  Prints the figures; asserts
nothing.

    .venv/bin/python bench/vacation_reply.py              # 2,000 messages
    .venv/bin/python bench/vacation_reply.py --messages 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ourmail.vacation.record import ReplyRecord
from ourmail.vacation.rules import read_header, refusal, reply
from ourmail.vacation.settings import Vacation

USER = "ann@example.test"


def header(n: int) -> bytes:
    """A realistic header section (Received lines, DKIM, a few recipients) of about 3 KB."""
    received = "".join(
        f"Received: from relay{i}.far.test (relay{i}.far.test [192.0.2.{i}])\r\n"
        f"\tby mx.example.test with ESMTPS id abc{i}; Mon, 30 Nov 2026 21:00:0{i} +0000\r\n"
        for i in range(6)
    )
    dkim = "DKIM-Signature: v=1; a=rsa-sha256; d=far.test; s=s1; " + "b=" + "x" * 340 + "\r\n"
    fields = (
        f"From: Sender {n} <s{n}@far.test>\r\nTo: Ann <{USER}>, team@far.test\r\n"
        f"Cc: a@far.test, b@far.test\r\nSubject: =?UTF-8?B?zqDPgc+Mz4POus67zrfPg863?= {n}\r\n"
        f"Message-ID: <m{n}@far.test>\r\nDate: Mon, 30 Nov 2026 21:00:00 +0000\r\n"
    )
    return (received + dkim + fields + "\r\nHello\r\n").encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    args = ap.parse_args()
    heads = [header(n) for n in range(args.messages)]
    vacation = Vacation(True, "", "Λείπω ως τις 24.\nFor urgent matters call 555-0100.")

    start = time.perf_counter()
    originals = []
    for head in heads:
        original = read_header(head)
        why, _ = refusal(original, "s@far.test", USER, lambda a: False)
        assert why is None
        originals.append(original)
    rules = (time.perf_counter() - start) / len(heads)

    start = time.perf_counter()
    for original in originals:
        reply(vacation, original, USER, "s@far.test", "mail.example.test", time.time())
    build = (time.perf_counter() - start) / len(heads)

    with tempfile.TemporaryDirectory() as tmp:
        record = ReplyRecord(Path(tmp) / "replies.sqlite", max_per_day=10**9)
        record.claim(USER, "warm@far.test", "h", 7, time.time())  # creates the file
        now = time.time()
        start = time.perf_counter()
        for n in range(len(heads)):
            record.claim(USER, f"s{n}@far.test", "h", 7, now)
        claim = (time.perf_counter() - start) / len(heads)
        size = (Path(tmp) / "replies.sqlite").stat().st_size

    print(f"{len(heads)} messages of {len(heads[0])} bytes of header")
    print(f"rules (read the header, decide):  {rules * 1e6:8.1f} us per delivered message")
    print(f"build the reply:                  {build * 1e6:8.1f} us per reply")
    print(f"claim in the record (SQLite):     {claim * 1e3:8.2f} ms per reply")
    print(f"record size after {len(heads)} replies: {size / 1024:.0f} KiB (before WAL checkpoint)")


if __name__ == "__main__":
    main()
