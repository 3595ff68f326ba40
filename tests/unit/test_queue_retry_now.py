""" "Retry now" (``ourmail queue retry``, the console's queue page) while the runner is trying
the message: the runner's back-off must not undo it (``queue/runner.py`` ``_finish``)."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from ourmail.config import QueueSettings
from ourmail.manage import queueops
from ourmail.queue.files import Envelope, QueuedRecipient, new_id
from ourmail.queue.runner import OutboundQueue

NOW = 1_800_000_000.0


def queue_with_one(tmp_path: Path) -> tuple[OutboundQueue, str]:
    queue = OutboundQueue(QueueSettings(), tmp_path, "mx.test", None, None, Clock())  # type: ignore[arg-type]
    queue.files.prepare()
    envelope = Envelope(new_id(NOW), "a@example.test", [QueuedRecipient("b@far.test")], NOW, 3)
    queue.files.add(envelope, b"x\r\n")
    return queue, envelope.id


def test_a_retry_asked_for_during_an_attempt_is_kept(tmp_path: Path) -> None:
    queue, qid = queue_with_one(tmp_path)
    began = queue.files.read(qid)  # what the runner read when its attempt began
    queueops.retry(queue.files, qid)  # the console, while the attempt runs
    next_attempt, _ = queue._finish(qid, NOW + 10, began.retries)
    assert next_attempt == NOW + 10  # due at once, not after the back-off
    assert queue.files.read(qid).next_attempt == NOW + 10
    began = queue.files.read(qid)
    next_attempt, _ = queue._finish(qid, NOW + 20, began.retries)  # no new request
    assert next_attempt is not None and next_attempt > NOW + 20
