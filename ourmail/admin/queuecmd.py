"""``ourmail queue``: look at and steer the outbound queue, while the server runs or not.

Every change goes through :mod:`ourmail.manage.queueops` (the code the admin console uses too):
:class:`~ourmail.queue.files.QueueFiles` under the queue lock, then the wake-up file so a running
server re-reads the schedule within a second, then a line in the audit log
(docs/admin-console.md#the-audit-log).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from ourmail.interfaces import Actor, QueueRefused
from ourmail.manage import queueops
from ourmail.manage.audit import AuditFile, unix_user
from ourmail.queue.files import Envelope, QueueError, QueueFiles


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _state(envelope: Envelope) -> str:
    kind = queueops.state(envelope)
    return f"retry {_when(envelope.next_attempt)}" if kind == "retry" else kind


def queue_list(files: QueueFiles, args: argparse.Namespace) -> None:
    ids = files.ids()
    for qid in ids:
        try:
            e = files.read(qid)
        except QueueError:
            continue  # delivered or deleted meanwhile
        verp = " (VERP)" if e.verp else ""
        print(f"{qid}  {e.size:>9}  {_when(e.created)}  <{e.sender}>{verp}  {_state(e)}")
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
    if e.verp:
        print("verp: yes (one transaction per recipient, each with its own sender)")
    for r in e.recipients:
        detail = f" {r.status} {r.diagnostic}".rstrip() if r.status else ""
        own = f" from <{e.sender_for(r)}>" if e.verp else ""
        print(f"recipient: {r.address}{own} {r.state}{detail}")
    print()
    header = _refused_as_error(lambda: queueops.header(files, e.id))
    print(header.replace(b"\r\n", b"\n").decode("utf-8", "replace"))


def _refused_as_error(work: Callable[[], bytes]) -> bytes:
    try:
        return work()
    except QueueRefused as e:
        raise QueueError(str(e)) from None


def _change(files: QueueFiles, action: str, qid: str, done: str) -> None:
    """One change through the shared code, audit-logged as the Unix user running it."""
    audit = AuditFile(files.root.parent)  # the queue is <data>/queue
    actor = Actor(unix_user(), "cli")
    try:
        queueops.audited(
            audit,
            actor,
            queueops.ACTIONS[action],
            qid,
            lambda: queueops.CHANGES[action](files, qid),
        )
    except QueueRefused as e:
        raise QueueError(str(e)) from None
    print(f"{qid}: {done}")


def queue_retry(files: QueueFiles, args: argparse.Namespace) -> None:
    for qid in [args.id] if args.id else files.ids():
        _change(files, "retry", qid, "will be retried now")


def queue_hold(files: QueueFiles, args: argparse.Namespace) -> None:
    _change(files, "hold", args.id, "held (not delivered until released)")


def queue_release(files: QueueFiles, args: argparse.Namespace) -> None:
    _change(files, "release", args.id, "released")


def queue_delete(files: QueueFiles, args: argparse.Namespace) -> None:
    _change(files, "delete", args.id, "deleted (no notice is sent)")


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
