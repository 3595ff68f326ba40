"""How long a post to a large mailing list takes to be handed to the outbound queue (issue 19:
a 10,000-member list within 2 s): ``lists.distribute`` from the post's bytes to the last
batch durable in the queue, with the real list database, the real Maildir store (the archive
copy) and the real ``OutboundQueue`` on a temporary folder whose runner never runs (its
clock is a ``Clock`` nobody advances), so that only the hand-over is measured.  Prints the
time of each round and the median; asserts nothing.

    .venv/bin/python bench/lists_fanout.py                      # 10,000 members, 3 rounds
    .venv/bin/python bench/lists_fanout.py --members 1000 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from ourmail.config import ListsSettings, QueueSettings
from ourmail.dsnparams import MailParams, RcptParams
from ourmail.lists.context import ListContext
from ourmail.lists.distribute import distribute
from ourmail.lists.listdb import ListDB
from ourmail.lists.model import ListSettings, Member
from ourmail.queue.runner import OutboundQueue
from ourmail.store.userstore import MaildirStore

LIST = ListSettings(
    "team@bench.test", name="Team", subject_prefix="[team]", footer="The team's list."
)


class WithoutVERP:
    """The queue as it is before VERP is wired (the ``verp`` and ``personal`` arguments
    dropped): the hand-over is then measured without the per-member header fields."""

    def __init__(self, queue: OutboundQueue) -> None:
        self.queue = queue

    def enqueue(
        self,
        sender: str,
        recipients: Sequence[tuple[str, RcptParams]],
        content: bytes | os.PathLike[str],
        mail_params: MailParams,
        utf8: bool,
        forwarded: bool = False,
        verp: bool = False,
        personal: Mapping[str, bytes] | None = None,
        key: str = "",
    ) -> Deferred[str]:
        return self.queue.enqueue(sender, recipients, content, mail_params, utf8, forwarded)  # type: ignore[arg-type]


def post(n: int, size: int) -> bytes:
    head = (
        f"From: Ann Poster <ann@poster.test>\r\nTo: {LIST.address}\r\n"
        f"Subject: round {n}\r\nMessage-ID: <{n}.{time.time()}@poster.test>\r\n\r\n"
    )
    line = b"the council minutes budget meeting report agenda please find attached\r\n"
    return head.encode() + line * max(1, size // len(line))


async def main(reactor: Any, args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="lists-fanout-"))
    db = ListDB(root / "lists" / "lists.sqlite")
    (root / "lists").mkdir()
    db.create(LIST, 0.0)
    members = [Member(f"member{n}@remote{n % 50}.test") for n in range(args.members)]
    db.subscribe(LIST.address, members)
    queue = OutboundQueue(QueueSettings(), root, "mx.bench.test", None, None, reactor, task.Clock())  # type: ignore[arg-type]
    queue.files.prepare()
    verp = "verp" in inspect.signature(queue.enqueue).parameters
    ctx = ListContext(
        db,
        root / "lists",
        None,  # type: ignore[arg-type]
        MaildirStore(root / "store", reactor),
        queue if verp else WithoutVERP(queue),  # type: ignore[arg-type]
        ListsSettings(batch=args.batch),
        "mx.bench.test",
        "https://mx.bench.test",
        b"s" * 32,
    )
    times = []
    for n in range(args.rounds):
        message = post(n, args.size)
        start = time.perf_counter()
        count = await distribute(ctx, LIST, message, "ann@poster.test")
        times.append(time.perf_counter() - start)
        print(f"round {n}: {count} members handed to the queue in {times[-1]:.3f} s")
    queued = sum(1 for p in (root / "queue").rglob("*") if p.is_file())
    print(
        f"members {args.members}, batch {args.batch}, post {args.size} octets, "
        f"VERP and per-member List-Unsubscribe {'on' if verp else 'NOT wired in this queue'}"
    )
    print(f"median {statistics.median(times):.3f} s (target 2 s); queue files {queued}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, options)))
