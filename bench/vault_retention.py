"""Retention's passes over a vault of N messages (issue 18 points 4 and 5): what deriving the
rules and holds from the chain costs (``retention.load``, asked by ``ourmail vault holds`` and
at each hold, rule or release), a dry run (``expiry.plan``), and an expiry run that removes a
tenth of the messages (``expiry.expire``: the expire record, then the segment rewrite).
Prints figures; asserts nothing.

    .venv/bin/python bench/vault_retention.py --dir /var/tmp/vr --count 1000000 [--segment-mib 16]

Messages have 2 KiB bodies of hex digits (zlib halves them), one blob and one capture each,
 written without fsync and reused on later runs of the same count; the
expiry run works on a copy, so the vault stays for the next run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ourmail.vault import expiry, retention
from ourmail.vault.segments import SEGMENT_SIZE, SegmentLog

DAY = 86400.0
T0 = 1_800_000_000.0
LOCAL = ("org.test",)


class LockTimed(SegmentLog):
    """A log that notes how long each hold of the vault's lock lasts (what capture waits
    for while expiry runs)."""

    holds: list[float] = []

    @contextmanager
    def locked(self) -> Iterator[None]:
        with super().locked():
            started = time.perf_counter()
            try:
                yield
            finally:
                self.holds.append(time.perf_counter() - started)


def make(root: Path, count: int, segment_size: int) -> None:
    log = SegmentLog(root, segment_size=segment_size)
    have = log.head()[0] // 2
    with log.locked():
        for start in range(have, count, 1000):
            items: list[Any] = []
            for n in range(start, min(start + 1000, count)):
                body = os.urandom(1024).hex().encode()
                header = f"From: x{n}@else.test\r\nTo: u{n % 500}@org.test\r\n\r\n".encode()
                message = header + body
                sha = hashlib.sha256(body).hexdigest()
                envelope = {"via": "smtp", "sender": f"x{n}@else.test", "arrival": T0 + n,
                            "recipients": [f"u{n % 500}@org.test"], "mailboxes": []}  # fmt: skip
                fields = {"body": sha, "message_sha256": hashlib.sha256(message).hexdigest(),
                          "size": len(message), "envelope": envelope}  # fmt: skip
                items += [("blob", {}, body), ("capture", fields, header)]
            log.append(items, T0 + start)
    if have < count:
        # every tenth user's mail is kept 30 days, and one of them is held
        with log.locked():
            for user in range(0, 500, 10):
                log.append([retention.rule_item(f"user:u{user}@org.test", 30, "bench")], T0)
            log.append([retention.rule_item("default", None, "bench")], T0)
            hold = retention.hold_item(
                retention.State(LOCAL), "bench", {"user": "u10@org.test"}, "bench", "bench"
            )
            log.append([hold], T0)


def timed(what: str, work: Any) -> Any:
    started = time.perf_counter()
    result = work()
    print(f"{what}: {time.perf_counter() - started:.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--segment-mib", type=int, default=SEGMENT_SIZE >> 20)
    args = parser.parse_args()
    segment_size = args.segment_mib << 20
    root = args.dir / f"vault-{args.count}-{args.segment_mib}"
    timed(
        f"writing {args.count} messages (first run only)",
        lambda: make(root, args.count, segment_size),
    )
    segments = SegmentLog(root).segments()
    size = sum(p.stat().st_size for _, p in segments)
    print(
        f"vault: {args.count} messages, {size / 2**20:.0f} MiB in {len(segments)} segments "
        f"of {args.segment_mib} MiB"
    )
    log = SegmentLog(root)
    state = timed(
        "retention.load (rules and holds from the chain)", lambda: retention.load(log, LOCAL)
    )
    print(f"  {len(state.rules)} rules, {len(state.holds)} holds, last seq {state.last_seq}")
    now = T0 + args.count + 31 * DAY
    plan = timed("expiry.plan (a dry run)", lambda: expiry.plan(log, LOCAL, now))
    print(f"  would expire {len(plan.captures)} messages, {plan.octets / 2**20:.1f} MiB stored")
    copy = args.dir / "expiring"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(root, copy)
    timed_log = LockTimed(copy, segment_size=segment_size)
    report = timed(
        "expiry.expire (plan again under the lock, expire record, rewrite)",
        lambda: expiry.expire(timed_log, LOCAL, now),
    )
    print(f"  expired {len(report.plan.captures)} messages in {len(report.segments)} segments")
    holds = " + ".join(f"{h:.2f} s" for h in timed_log.holds)
    print(f"  the vault's lock held {holds} (capture waits that long)")
    shutil.rmtree(copy)


if __name__ == "__main__":
    main()
