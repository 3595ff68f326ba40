"""The queue's VERP envelopes delivered here, and the end of an attempt (``queue/runner.py``):
local copies a few at a time, each result on record before its worker goes on (a crash
resends nobody recorded), and DSNs built outside the queue lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from queuehelp import wait_for
from storehelp import on_reactor
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from ourmail.config import QueueSettings
from ourmail.dsnparams import NO_RCPT_PARAMS
from ourmail.interfaces import DeliveryResult
from ourmail.queue import dsn, runner
from ourmail.queue.files import DELIVERED, FAILED, Envelope, QueuedRecipient, QueueFiles, new_id
from ourmail.queue.runner import LOCAL_VERP_AT_ONCE, OutboundQueue

NOW = 1_800_000_000.0
MEMBERS = [f"m{n}@example.test" for n in range(30)]


class Directory:
    def is_local_domain(self, domain: str) -> bool:
        return domain == "example.test"


@attrs.define
class Local:
    """Delivers here after a moment; the ``stop_at``-th delivery (from 1) never ends, as if
    the server stopped there."""

    stop_at: int = 0
    calls: int = 0
    busy: int = 0
    most_busy: int = 0
    senders: list[str] = attrs.Factory(list)

    def deliver_queued(
        self, qid: str, sender: str, rcpts: Sequence[tuple[str, Any]], *rest: Any
    ) -> Deferred[list[DeliveryResult]]:
        self.calls += 1
        self.senders.append(sender)
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        d: Deferred[list[DeliveryResult]] = Deferred()
        if self.calls == self.stop_at:
            return d
        results = [DeliveryResult(a, 250, "2.0.0", "delivered") for a, _ in rcpts]

        def done() -> None:
            self.busy -= 1
            d.callback(results)

        reactor.callLater(0.001, done)  # type: ignore[attr-defined]
        return d


def verp_queue(tmp_path: Path, local: Local) -> tuple[OutboundQueue, Envelope]:
    queue = OutboundQueue(
        QueueSettings(),
        tmp_path,
        "mx.test",
        Directory(),
        local,
        reactor,
        Clock(),  # type: ignore[arg-type]
    )
    queue.files.prepare()
    envelope = Envelope(
        new_id(NOW),
        "list-bounces@example.test",
        [QueuedRecipient(a, NO_RCPT_PARAMS, personal=f"X-To: {a}\r\n") for a in MEMBERS],
        NOW,
        3,
        verp=True,
    )
    queue.files.add(envelope, b"x\r\n")
    return queue, envelope


def test_local_verp_copies_go_a_few_at_a_time(tmp_path: Path) -> None:
    local = Local()
    queue, envelope = verp_queue(tmp_path, local)
    on_reactor(lambda: Deferred.fromCoroutine(queue._deliver_all(envelope)))
    assert local.calls == len(MEMBERS)
    assert 1 < local.most_busy <= LOCAL_VERP_AT_ONCE
    assert sorted(local.senders) == sorted(
        f"list-bounces+{a.replace('@', '=')}@example.test" for a in MEMBERS
    )
    assert all(r.state == DELIVERED for r in queue.files.read(envelope.id).recipients)


def test_a_crash_amid_local_verp_copies_resends_nobody_recorded(tmp_path: Path) -> None:
    local = Local(stop_at=20)
    queue, envelope = verp_queue(tmp_path, local)
    attempts: list[Deferred[None]] = []
    on_reactor(lambda: attempts.append(Deferred.fromCoroutine(queue._deliver_all(envelope))))
    files = QueueFiles(tmp_path / "queue")

    def recorded() -> set[str] | None:
        found = files.read(envelope.id)
        done = {r.address for r in found.recipients if r.state == DELIVERED}
        return done if len(done) == len(MEMBERS) - 1 else None

    # The 20th delivery never ends; the others are each on record once done.
    delivered = wait_for(recorded)
    assert not attempts[0].called
    # The server stops now; after the restart only the one in flight is sent again.
    (pending,) = files.read(envelope.id).pending()
    assert pending.address not in delivered and local.calls == len(MEMBERS)


def test_dsns_are_built_outside_the_queue_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = OutboundQueue(QueueSettings(), tmp_path, "mx.test", None, None, Clock())  # type: ignore[arg-type]
    queue.files.prepare()
    envelope = Envelope(
        new_id(NOW),
        "list-bounces@example.test",
        [
            QueuedRecipient("bob@far.test", state=FAILED, status="5.1.1", diagnostic="550 no"),
            QueuedRecipient("eve@far.test"),
        ],
        NOW,
        3,
        verp=True,
    )
    queue.files.add(envelope, b"Subject: hi\r\n\r\nx\r\n")
    locked_while_building: list[bool] = []
    build = dsn.build_report

    def building(*args: Any, **kwargs: Any) -> bytes:
        fd = os.open(tmp_path / "queue" / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked_while_building.append(False)
        except BlockingIOError:
            locked_while_building.append(True)
        finally:
            os.close(fd)
        return build(*args, **kwargs)

    monkeypatch.setattr(runner.dsn, "build_report", building)
    next_attempt, reports = queue._finish(envelope.id, NOW + 10)
    assert next_attempt is not None and len(reports) == 1
    assert locked_while_building == [False]
    (report,) = reports
    notice = queue.files.read(report)
    assert notice.recipients[0].address == "list-bounces+bob=far.test@example.test"
    assert b"Final-Recipient: rfc822;bob@far.test" in queue.files.content(report)
    assert queue.files.read(envelope.id).recipients[0].reported
    # Nothing more to tell: a second end of an attempt builds and queues nothing.
    assert queue._finish(envelope.id, NOW + 20)[1] == []
    assert locked_while_building == [False]
