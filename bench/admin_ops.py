"""The admin console's operations pages at size (issue 17 point 4): the queue page with
50,000 queued messages, and the shard page with N users.  Prints figures; asserts nothing.

    .venv/bin/python bench/admin_ops.py --dir /var/tmp/aq --messages 50000 --users 2000

Queue: the server time of a page as the console asks for it (``LocalQueueAdmin.page`` minus
the thread hop): the first one after start (every envelope read once), later ones with the
queue unchanged (one ``stat``), a search over every sender and pending recipient, one after
a change made in the console (a directory scan, one envelope read) and one after a change by
the runner less than a second after the last scan (answered from memory).  Envelopes are written
without fsync (only reading is measured) and reused on later runs.

Shards: ``ourmail shard list``'s report (``shardmove.report``) with and without the byte count,
over N users with one small message each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from ourmail.manage.audit import AuditFile
from ourmail.manage.queueadmin import LocalQueueAdmin
from ourmail.queue.files import Envelope, QueuedRecipient, QueueFiles
from ourmail.store import shardmove
from ourmail.store.shards import DEFAULT_SHARDS_TOML, FILE_NAME, ShardMap


def make_queue(files: QueueFiles, count: int) -> None:
    files.prepare()
    have = len(os.listdir(files.envelopes))
    base = 1_800_000_000.0
    for n in range(have, count):
        qid = f"{int((base + n) * 1000):011x}{n % 0x10000:04x}0000"
        rcpts = [
            QueuedRecipient(
                f"user{n}.{k}@remote{n % 97}.example",
                status="4.4.1",
                diagnostic="connect to mx.remote.example[192.0.2.1]:25: Connection refused",
            )
            for k in range(1 + n % 3)
        ]
        envelope = Envelope(qid, f"sender{n % 5000}@example.org", rcpts, base + n, 4000)
        (files.envelopes / f"{qid}.json").write_bytes(envelope.to_json())


def timed(step: Callable[[], object], rounds: int = 10) -> str:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        samples.append((time.perf_counter() - t0) * 1000)
    return f"median {statistics.median(samples):8.2f} ms, max {max(samples):8.2f} ms"


def make_store(data: Path, users: int) -> None:
    (data / FILE_NAME).write_text(DEFAULT_SHARDS_TOML)
    shards = ShardMap(data)
    for n in range(users):
        cur = shards.user_dir(f"user{n}@example.org") / "cur"
        if not cur.is_dir():
            cur.mkdir(parents=True)
            (cur / "1.M1P1.host:2,S").write_bytes(b"Subject: x\r\n\r\n" + b"x" * 2000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=2_000)
    args = parser.parse_args()
    files = QueueFiles(args.dir / "queue")
    make_queue(files, args.messages)
    time.sleep(1.1)  # past the index's one-second "racy" window
    admin = LocalQueueAdmin(files, AuditFile(args.dir))
    t0 = time.perf_counter()
    first = admin.page_now("", 0, 50)
    print(f"{first.total} queued messages")
    print(f"queue, first page after start (reads every envelope once): "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms")  # fmt: skip
    print(f"queue, first page, unchanged:        {timed(lambda: admin.page_now('', 0, 50))}")
    print(f"queue, page 900, unchanged:          {timed(lambda: admin.page_now('', 44950, 50))}")
    print(
        f"queue, search 'user4242.', unchanged: {timed(lambda: admin.page_now('user4242.', 0, 50))}"
    )
    qid = first.messages[0].id

    def one_change() -> object:
        files.update(qid, lambda e: setattr(e, "held", not e.held))
        admin.index.invalidate()  # as after a change made in the console
        return admin.page_now("", 0, 50)

    def runner_changed() -> object:
        files.update(qid, lambda e: setattr(e, "held", not e.held))
        return admin.page_now("", 0, 50)

    print(f"queue, a change of ours, then a page (rescan): {timed(one_change, 5)}")
    print(f"queue, the runner's change, then a page (<1 s after a scan): {timed(runner_changed)}")
    print(f"  (envelopes read in all: {admin.index.reads})")
    make_store(args.dir, args.users)
    t0 = time.perf_counter()
    cheap = shardmove.report(args.dir, sizes=False)
    cheap_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    full = shardmove.report(args.dir)
    full_ms = (time.perf_counter() - t0) * 1000
    print(f"shards, {sum(r.users for r in cheap)} users: users only {cheap_ms:.0f} ms, "
          f"with bytes {full_ms:.0f} ms ({sum(r.bytes for r in full) / 1e6:.1f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
