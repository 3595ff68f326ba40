"""The mail the server sends on its own account (out-of-office replies, DMARC and TLS
reports) is captured before it is queued, and not queued when it cannot be captured."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from ourmail.dsnparams import NO_MAIL_PARAMS, RcptParams
from ourmail.interfaces import VaultEnvelope
from ourmail.vault.outbound import CapturingQueue


class Steps:
    def __init__(self, capture_fails: bool = False) -> None:
        self.done: list[tuple[str, Any]] = []
        self.capture_fails = capture_fails

    def capture(self, source: object, envelope: VaultEnvelope) -> Deferred[int]:
        self.done.append(("capture", envelope))
        return fail(OSError("vault disk full")) if self.capture_fails else succeed(7)

    def enqueue(self, sender: str, recipients: Any, *args: Any) -> Deferred[str]:
        self.done.append(("enqueue", sender))
        return succeed("q1")


def test_captured_then_queued() -> None:
    steps = Steps()
    clock = Clock()
    clock.advance(1000)
    queue = CapturingQueue(steps, steps, clock)  # type: ignore[arg-type]
    rcpts = [("far@away.test", RcptParams()), ("far@away.test", RcptParams())]
    got: list[str] = []
    queue.enqueue("bob@example.test", rcpts, b"Subject: away\r\n\r\nback monday\r\n").addCallback(
        got.append
    )
    assert got == ["q1"]
    (first, envelope), second = steps.done
    assert first == "capture" and second == ("enqueue", "bob@example.test")
    assert envelope == VaultEnvelope(
        via="system", sender="bob@example.test", recipients=("far@away.test",), arrival=1000.0
    )


def test_not_queued_when_the_vault_cannot_keep_it() -> None:
    steps = Steps(capture_fails=True)
    queue = CapturingQueue(steps, steps, Clock())  # type: ignore[arg-type]
    failures: list[Any] = []
    queue.enqueue("", [("x@y.test", RcptParams())], b"x", NO_MAIL_PARAMS).addErrback(
        failures.append
    )
    assert [kind for kind, _ in steps.done] == ["capture"] and failures
