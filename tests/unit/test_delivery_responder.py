"""Delivery tells the out-of-office responder of each INBOX copy (not Junk, not from <>),
with the message's first octets, and never waits for it or fails with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from conftest import _ensure_reactor
from test_delivery import ALICE, BOB, TEAM, delivery, result, txn
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread

from ourmail.smtp.delivery import RESPONDER_HEAD

MESSAGE = b"To: team@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


class Responder:
    def __init__(self, broken: bool = False) -> None:
        self.told: list[tuple[str, str, bytes]] = []
        self.broken = broken
        self.pending: Deferred[None] = Deferred()  # never fires: delivery must not wait

    def delivered(self, mailbox: str, sender: str, head: bytes) -> Deferred[None]:
        if self.broken:
            raise RuntimeError("a broken responder")
        self.told.append((mailbox, sender, head))
        return self.pending


def test_each_inbox_copy_is_told_and_delivery_does_not_wait() -> None:
    d, store = delivery()
    responder = Responder()
    d.responder = responder  # type: ignore[assignment]
    results = result(d.deliver(txn(TEAM, ALICE), MESSAGE))
    assert [r.code for r in results] == [250, 250]
    assert sorted(m for m, _, _ in responder.told) == [ALICE.address, BOB.address]
    assert all(s == "s@else.test" and h == MESSAGE for _, s, h in responder.told)


def test_junk_the_null_sender_and_failed_copies_are_not_told() -> None:
    d, store = delivery()
    responder = Responder()
    d.responder = responder  # type: ignore[assignment]
    result(d.deliver(attrs.evolve(txn(ALICE), junk=True), MESSAGE))
    result(d.deliver(attrs.evolve(txn(ALICE), sender=""), MESSAGE))
    store.failing[BOB.address] = OSError("disk")
    result(d.deliver(txn(TEAM), MESSAGE))
    assert [m for m, _, _ in responder.told] == [ALICE.address]  # of TEAM, only alice's copy


def test_a_broken_responder_does_not_fail_delivery() -> None:
    d, _ = delivery()
    d.responder = Responder(broken=True)  # type: ignore[assignment]
    assert [r.code for r in result(d.deliver(txn(ALICE), MESSAGE))] == [250]


def test_a_spooled_message_is_read_up_to_the_limit(tmp_path: Path) -> None:
    spool = tmp_path / "spooled"
    spool.write_bytes(MESSAGE + b"x" * (2 * RESPONDER_HEAD))
    d, _ = delivery()
    responder = Responder()
    d.responder = responder  # type: ignore[assignment]
    _ensure_reactor()

    def deliver() -> Deferred[Any]:
        return d.deliver(txn(ALICE), spool)

    assert [r.code for r in blockingCallFromThread(reactor, deliver)] == [250]
    ((_, _, head),) = responder.told
    assert head.startswith(MESSAGE) and len(head) == RESPONDER_HEAD
    spool.unlink()  # a spool file gone by then: delivery goes on, the responder is not told
    d2, _ = delivery()
    d2.responder = responder  # type: ignore[assignment]
    results = blockingCallFromThread(reactor, lambda: d2.deliver(txn(ALICE), spool))
    assert [r.code for r in results] == [250] and len(responder.told) == 1
