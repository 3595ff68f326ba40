"""The queue's VERP on its own: envelope files (old ones still load), the VERP sender, one
connection for a VERP job's transactions, and what ``ourmail queue show`` says."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from ourmail.admin.queuecmd import queue_show
from ourmail.config import QueueSettings
from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.queue.client import Outgoing, RcptResult, SessionError
from ourmail.queue.files import Envelope, QueuedRecipient, QueueFiles, verp_sender
from ourmail.queue.remote import Route
from ourmail.queue.runner import Destination, Job
from ourmail.vault.outbound import CapturingQueue


@pytest.mark.parametrize(
    ("sender", "rcpt", "expected"),
    [
        (
            "list-bounces@example.test",
            "bob@remote.test",
            "list-bounces+bob=remote.test@example.test",
        ),
        ("a+b@example.test", "c+d@e.test", "a+b+c+d=e.test@example.test"),
        ("", "bob@remote.test", ""),  # RFC 5321 §4.5.5: the null sender stays null
    ],
)
def test_verp_sender(sender: str, rcpt: str, expected: str) -> None:
    assert verp_sender(sender, rcpt) == expected


def envelope() -> Envelope:
    return Envelope(
        id="0123abcd",
        sender="list-bounces@example.test",
        recipients=[
            QueuedRecipient("bob@remote.test", personal="List-Unsubscribe: <https://x/b>\r\n"),
            QueuedRecipient("eve@else.test", state="failed", status="5.1.1"),
        ],
        created=1.0,
        size=10,
        verp=True,
    )


def test_envelope_files_keep_verp_and_old_ones_still_load() -> None:
    e = envelope()
    again = Envelope.from_json(e.to_json())
    assert again == e and again.sender_for(again.recipients[0]) == (
        "list-bounces+bob=remote.test@example.test"
    )
    old = json.loads(e.to_json())
    del old["verp"], old["forwarded"]
    for r in old["recipients"]:
        del r["personal"]
    loaded = Envelope.from_json(json.dumps(old).encode())
    assert not loaded.verp and loaded.recipients[0].personal == ""
    assert loaded.sender_for(loaded.recipients[0]) == "list-bounces@example.test"


def test_queue_show_names_each_recipients_sender(tmp_path: Path, capsys: Any) -> None:
    files = QueueFiles(tmp_path)
    files.prepare()
    files.add(envelope(), b"Subject: news\r\n\r\nhi\r\n")
    queue_show(files, argparse.Namespace(id="0123abcd"))
    out = capsys.readouterr().out
    assert "verp: yes" in out
    assert (
        "recipient: bob@remote.test from <list-bounces+bob=remote.test@example.test> pending" in out
    )
    assert (
        "recipient: eve@else.test from <list-bounces+eve=else.test@example.test> failed 5.1.1"
        in out
    )


@attrs.define
class Session:
    """Takes each transaction, except that the n-th sent (from 0) raises ``breaks[n]``, after
    which the connection is dead."""

    world: World
    host: str = "mx.remote.test"
    dead: bool = False

    async def send(self, msg: Outgoing) -> list[RcptResult]:
        n = len(self.world.sent)
        self.world.sent.append((msg.sender, msg.prefix))
        self.world.events.append(f"send {msg.recipients[0][0]}")
        if self.dead:
            raise ConnectionError("not connected")
        if n in self.world.breaks:
            self.dead = True
            raise self.world.breaks[n]
        return [RcptResult(a, True, "2.0.0", "250 ok") for a, _ in msg.recipients]

    async def quit(self) -> None:
        self.world.closed += 1


@attrs.define
class World:
    settings: QueueSettings = attrs.Factory(QueueSettings)
    breaks: dict[int, Exception] = attrs.Factory(dict)
    connections: int = 0
    opened: int = 0
    closed: int = 0
    sent: list[tuple[str, bytes]] = attrs.Factory(list)
    events: list[str] = attrs.Factory(list)

    @property
    def connector(self) -> World:
        return self

    async def open(self, route: Route) -> Session:
        self.opened += 1
        return Session(self)

    def connection_closed(self) -> None:
        self.connections -= 1


def verp_job(world: World, count: int) -> tuple[Job, dict[str, RcptResult]]:
    """A VERP job of ``count`` transactions; its results as recorded, by address."""
    messages = [
        Outgoing(
            f"l+{n}=remote.test@example.test",
            [(f"{n}@remote.test", NO_RCPT_PARAMS)],
            b"x",
            prefix=b"P: %d\r\n" % n,
        )
        for n in range(count)
    ]
    recorded: dict[str, RcptResult] = {}

    def record(results: list[RcptResult], host: str) -> Deferred[None]:
        for r in results:
            world.events.append(f"record {r.address}")
            recorded[r.address] = r
        return succeed(None)

    return Job(messages, record), recorded


def test_a_verp_jobs_transactions_share_one_connection() -> None:
    world = World(breaks={2: ConnectionError("reset by peer")})
    dest = Destination(world, Route("remote.test", "remote.test", 25))  # type: ignore[arg-type]
    job, recorded = verp_job(world, 5)
    dest.submit(job)
    assert job.done.called
    assert world.sent[:2] == [
        ("l+0=remote.test@example.test", b"P: 0\r\n"),
        ("l+1=remote.test@example.test", b"P: 1\r\n"),
    ]
    # Each transaction's result is on record before the next transaction begins.
    assert world.events[:6] == [
        "send 0@remote.test",
        "record 0@remote.test",
        "send 1@remote.test",
        "record 1@remote.test",
        "send 2@remote.test",
        "record 2@remote.test",
    ]
    # The two taken keep their result; the one lost is retried later; the ones not tried
    # went over a second connection.
    assert [(a, r.ok, r.status) for a, r in sorted(recorded.items())] == [
        ("0@remote.test", True, "2.0.0"),
        ("1@remote.test", True, "2.0.0"),
        ("2@remote.test", False, "4.4.2"),
        ("3@remote.test", True, "2.0.0"),
        ("4@remote.test", True, "2.0.0"),
    ]
    assert world.opened == world.closed == 2


def test_one_failing_verp_transaction_condemns_no_other() -> None:
    # The server refuses one member's transaction for good and the session dies with it.
    world = World(breaks={1: SessionError("5.7.1", "550 5.7.1 sender refused (in reply to RSET)")})
    dest = Destination(world, Route("remote.test", "remote.test", 25))  # type: ignore[arg-type]
    job, recorded = verp_job(world, 4)
    dest.submit(job)
    assert job.done.called
    assert [(a, r.ok, r.status) for a, r in sorted(recorded.items())] == [
        ("0@remote.test", True, "2.0.0"),
        ("1@remote.test", False, "5.7.1"),  # its own outcome: a DSN for it alone
        ("2@remote.test", True, "2.0.0"),
        ("3@remote.test", True, "2.0.0"),
    ]


def test_a_connection_that_takes_nothing_leaves_the_rest_for_the_next_attempt() -> None:
    # A server that drops every connection at its first transaction (421, then close): one
    # connection, not one per member; the members not tried stay pending (no result).
    world = World(breaks={n: ConnectionError("421 4.7.0 too busy") for n in range(10)})
    dest = Destination(world, Route("remote.test", "remote.test", 25))  # type: ignore[arg-type]
    job, recorded = verp_job(world, 4)
    dest.submit(job)
    assert job.done.called and world.opened == 1
    assert [(a, r.ok, r.status) for a, r in recorded.items()] == [("0@remote.test", False, "4.4.2")]


class Recorder:
    """A vault and a queue in one: records what the capturing queue hands on."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def capture(self, source: object, envelope: object) -> Deferred[int]:
        return succeed(1)

    def enqueue(self, *args: Any) -> Deferred[str]:
        self.calls.append(args)
        return succeed("q1")


def test_the_vaults_capturing_queue_passes_verp_and_personal_on() -> None:
    steps = Recorder()
    queue = CapturingQueue(steps, steps, Clock())  # type: ignore[arg-type]
    fields = {"bob@remote.test": b"List-Unsubscribe: <https://x/b>\r\n"}
    rcpts = [("bob@remote.test", NO_RCPT_PARAMS)]
    queue.enqueue("l@example.test", rcpts, b"x", NO_MAIL_PARAMS, False, False, True, fields)
    ((*_, verp, personal, key),) = steps.calls
    assert verp is True and personal == fields and key == ""
