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
from ourmail.queue.client import Outgoing, RcptResult
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
    """Takes two transactions, then loses the connection."""

    world: World
    host: str = "mx.remote.test"

    async def send(self, msg: Outgoing) -> list[RcptResult]:
        self.world.sent.append((msg.sender, msg.prefix))
        if len(self.world.sent) > 2:
            raise ConnectionError("reset by peer")
        return [RcptResult(a, True, "2.0.0", "250 ok") for a, _ in msg.recipients]

    async def quit(self) -> None:
        self.world.closed += 1


@attrs.define
class World:
    settings: QueueSettings = attrs.Factory(QueueSettings)
    connections: int = 0
    opened: int = 0
    closed: int = 0
    sent: list[tuple[str, bytes]] = attrs.Factory(list)

    @property
    def connector(self) -> World:
        return self

    async def open(self, route: Route) -> Session:
        self.opened += 1
        return Session(self)

    def connection_closed(self) -> None:
        self.connections -= 1


def test_a_verp_jobs_transactions_share_one_connection() -> None:
    world = World()
    dest = Destination(world, Route("remote.test", "remote.test", 25))  # type: ignore[arg-type]
    messages = [
        Outgoing(
            f"l+{n}=remote.test@example.test",
            [(f"{n}@remote.test", NO_RCPT_PARAMS)],
            b"x",
            prefix=b"P: %d\r\n" % n,
        )
        for n in range(4)
    ]
    job = Job(messages[0], more=messages[1:])
    results: list[list[RcptResult]] = []
    job.done.addCallback(results.append)
    dest.submit(job)
    assert job.done.called
    assert world.opened == world.closed == 1
    assert world.sent[:2] == [
        ("l+0=remote.test@example.test", b"P: 0\r\n"),
        ("l+1=remote.test@example.test", b"P: 1\r\n"),
    ]
    # The two taken keep their result; the one lost and the one never sent are retried.
    ((first, second, lost, unsent),) = results
    assert first.ok and second.ok
    assert (lost.ok, lost.status, unsent.ok, unsent.status) == (False, "4.4.2", False, "4.4.2")
    assert unsent.address == "3@remote.test"


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
    ((*_, verp, personal),) = steps.calls
    assert verp is True and personal == fields
