"""``ourmail queue``: look at and steer the outbound queue, while the server runs or not.

Every change goes through :class:`~ourmail.queue.files.QueueFiles` under the queue lock,
then touches the wake-up file so a running server re-reads the schedule within a second.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from ourmail.queue.files import Envelope, QueueError, QueueFiles


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _state(envelope: Envelope) -> str:
    if envelope.held:
        return "held"
    if envelope.attempts == 0:
        return "new"
    return f"retry {_when(envelope.next_attempt)}"


def queue_list(files: QueueFiles, args: argparse.Namespace) -> None:
    ids = files.ids()
    for qid in ids:
        try:
            e = files.read(qid)
        except QueueError:
            continue  # delivered or deleted meanwhile
        print(f"{qid}  {e.size:>9}  {_when(e.created)}  <{e.sender}>  {_state(e)}")
        for r in e.pending():
            why = f"  ({r.diagnostic})" if r.diagnostic else ""
            print(f"    {r.address}{why}")
    print(f"{len(ids)} message{'s' if len(ids) != 1 else ''} in the queue")


def queue_show(files: QueueFiles, args: argparse.Namespace) -> None:
    e = files.read(args.id)
    print(f"id: {e.id}\nsender: <{e.sender}>\narrived: {_when(e.created)}\nsize: {e.size}")
    print(f"attempts: {e.attempts}\nstate: {_state(e)}")
    if e.dsn.envid or e.dsn.ret:
        print(f"dsn: envid={e.dsn.envid or '-'} ret={e.dsn.ret or '-'}")
    for r in e.recipients:
        detail = f" {r.status} {r.diagnostic}".rstrip() if r.status else ""
        print(f"recipient: {r.address} {r.state}{detail}")
    content = files.content(e.id)
    end = content.find(b"\r\n\r\n")
    print()
    header = content[: end if end >= 0 else len(content)]
    print(header.replace(b"\r\n", b"\n").decode("utf-8", "replace"))


def _change(files: QueueFiles, qid: str, change: Callable[[Envelope], None], done: str) -> None:
    if files.update(qid, change) is None:
        raise QueueError(f"no such message: {qid}")
    files.poke()
    print(f"{qid}: {done}")


def _due_now(e: Envelope) -> None:
    e.next_attempt = 0.0


def queue_retry(files: QueueFiles, args: argparse.Namespace) -> None:
    for qid in [args.id] if args.id else files.ids():
        _change(files, qid, _due_now, "will be retried now")


def queue_hold(files: QueueFiles, args: argparse.Namespace) -> None:
    def hold(e: Envelope) -> None:
        e.held = True

    _change(files, args.id, hold, "held (not delivered until released)")


def queue_release(files: QueueFiles, args: argparse.Namespace) -> None:
    def release(e: Envelope) -> None:
        e.held = False
        e.next_attempt = 0.0

    _change(files, args.id, release, "released")


def queue_delete(files: QueueFiles, args: argparse.Namespace) -> None:
    if not files.remove(args.id):
        raise QueueError(f"no such message: {args.id}")
    files.poke()
    print(f"{args.id}: deleted (no notice is sent)")


def add_parser(topics: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``queue`` topic and its commands."""
    queue = topics.add_parser("queue", parents=[common], help="the outbound mail queue")
    cmds = queue.add_subparsers(dest="command", required=True)
    p = cmds.add_parser("list", parents=[common], help="queued messages and why they wait")
    p.set_defaults(queue_func=queue_list)
    p = cmds.add_parser("show", parents=[common], help="one message's envelope and header")
    p.add_argument("id")
    p.set_defaults(queue_func=queue_show)
    p = cmds.add_parser("retry", parents=[common], help="retry one message (or all) now")
    p.add_argument("id", nargs="?")
    p.set_defaults(queue_func=queue_retry)
    for name, func, help_ in (
        ("delete", queue_delete, "remove a message without notice"),
        ("hold", queue_hold, "keep a message from being delivered"),
        ("release", queue_release, "let a held message go, now"),
    ):
        p = cmds.add_parser(name, parents=[common], help=help_)
        p.add_argument("id")
        p.set_defaults(queue_func=func)
