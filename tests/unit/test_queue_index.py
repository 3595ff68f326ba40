"""The admin console's queue index (``ourmail/manage/queueadmin.py``): it answers from memory
while the envelope directory is unchanged, re-reads only replaced envelopes, forgets removed
ones, and does not trust a directory changed within the last second."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ourmail.manage import queueadmin
from ourmail.manage.queueadmin import QueueIndex
from ourmail.queue.files import Envelope, QueuedRecipient, QueueFiles


def queued(files: QueueFiles, qid: str, rcpt: str) -> None:
    envelope = Envelope(qid, "Sender@Example.org", [QueuedRecipient(rcpt)], 1.0, 10)
    files.add(envelope, b"Subject: x\r\n\r\nbody\r\n")


def age_directory(files: QueueFiles) -> None:
    """As if the last change were two seconds old (past the racy window)."""
    st = os.stat(files.envelopes)
    os.utime(files.envelopes, ns=(st.st_atime_ns, st.st_mtime_ns - 2_000_000_000))


def test_changes_are_seen_and_nothing_is_read_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queueadmin, "RESCAN_EVERY", 0.0)
    files = QueueFiles(tmp_path / "queue")
    files.prepare()
    queued(files, "a1", "one@remote.test")
    queued(files, "b2", "two@remote.test")
    age_directory(files)
    index = QueueIndex(files)
    messages, texts = index.current()
    assert [m.id for m in messages] == ["a1", "b2"] and index.reads == 2
    assert texts[0] == "sender@example.org\0one@remote.test"
    assert index.current()[0] is messages and index.reads == 2  # unchanged: from memory

    files.update("a1", lambda e: setattr(e, "held", True))
    files.remove("b2")
    messages, _ = index.current()
    assert [(m.id, m.state) for m in messages] == [("a1", "held")]
    assert index.reads == 3  # only the replaced envelope was read again
    # Changed again at once: seen (a directory changed within the last second is not trusted).
    files.update("a1", lambda e: setattr(e, "held", False))
    assert index.current()[0][0].state == "new"
