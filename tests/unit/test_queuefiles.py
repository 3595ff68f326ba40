"""The queue's files: durable add, locked updates, no path escapes, crash leftovers."""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path

import pytest

from ourmail.dsnparams import MailParams, RcptParams
from ourmail.queue.files import (
    FAILED,
    PENDING,
    RELAYED,
    Envelope,
    QueuedRecipient,
    QueueError,
    QueueFiles,
    Result,
    new_id,
)


def envelope(now: float = 1000.0) -> Envelope:
    return Envelope(
        id=new_id(now),
        sender="a@example.test",
        recipients=[
            QueuedRecipient("b@remote.test", RcptParams(frozenset({"SUCCESS"}), "rfc822;b@x")),
            QueuedRecipient("ç@remote.test"),
        ],
        created=now,
        size=3,
        dsn=MailParams("HDRS", "env"),
    )


def test_add_read_update_remove(tmp_path: Path) -> None:
    files = QueueFiles(tmp_path / "queue")
    files.prepare()
    e = envelope()
    files.add(e, b"abc")
    assert files.ids() == [e.id]
    assert files.read(e.id) == e
    assert files.content(e.id) == b"abc"
    updated = files.update(e.id, lambda env: setattr(env, "held", True))
    assert updated is not None and files.read(e.id).held
    assert files.remove(e.id)
    assert files.update(e.id, lambda env: None) is None  # never resurrected
    assert not files.remove(e.id)
    assert not any(files.messages.iterdir())


def test_ids_sort_by_arrival() -> None:
    ids = [new_id(5000.0 + n / 1000) for n in range(50)] + [new_id(5000.2) for _ in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 100


def test_ids_from_outside_cannot_name_paths(tmp_path: Path) -> None:
    files = QueueFiles(tmp_path / "queue")
    files.prepare()
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(QueueError):
            files.read(bad)


def test_unreadable_envelope_is_an_error_not_a_crash(tmp_path: Path) -> None:
    files = QueueFiles(tmp_path / "queue")
    files.prepare()
    (files.envelopes / "abc.json").write_text("{not json")
    with pytest.raises(QueueError):
        files.read("abc")


def test_leftovers_of_a_crash_are_removed(tmp_path: Path) -> None:
    files = QueueFiles(tmp_path / "queue")
    files.prepare()
    kept = envelope()
    files.add(kept, b"kept")
    orphan = files.messages / "0123abcd"
    orphan.write_bytes(b"never queued")
    half = files.envelopes / ".x.json.1.tmp"
    half.write_bytes(b"{")
    old = time.time() - 3600
    for p in (orphan, half):
        os.utime(p, (old, old))
    assert files.remove_orphans() == 2
    assert files.ids() == [kept.id] and files.content(kept.id) == b"kept"


def test_results_are_appended_then_folded_into_the_envelope(tmp_path: Path) -> None:
    files = QueueFiles(tmp_path / "queue")
    files.prepare()
    e = envelope()
    files.add(e, b"abc")
    ok = Result("b@remote.test", True, "2.0.0", "250 ok", "mx.remote.test", False, 5.0, True)
    files.record({e.id: [ok], "gone": [ok]})  # a message no longer queued: dropped
    results = files.envelopes / f"{e.id}.results"
    with results.open("ab") as f:
        f.write(b'{"address": "\xc3\xa7@remote.test", "ok": fal')  # cut short by a crash
    read = files.read(e.id)
    assert [(r.state, r.reported, r.remote_mta) for r in read.recipients] == [
        (RELAYED, True, "mx.remote.test"),
        (PENDING, False, ""),
    ]
    failed = Result("ç@remote.test", False, "5.1.1", "550 no", "mx.remote.test", False, 6.0)
    files.record({e.id: [failed]})  # on a line of its own after the cut one
    read = files.read(e.id)
    assert [r.state for r in read.recipients] == [RELAYED, FAILED]
    files.update(e.id, lambda env: None)  # a write folds the results in
    assert not results.exists() and files.read(e.id) == read
    files.record({e.id: [ok]})  # once more: nothing changes
    assert files.read(e.id) == read
    assert files.remove(e.id) and not results.exists()


def test_a_keyed_message_is_queued_once(tmp_path: Path) -> None:
    files = QueueFiles(tmp_path / "queue")
    files.prepare()
    first = envelope()
    assert files.add_once(first, b"x\r\n", "list-abc-0") == first.id
    assert files.read(first.id).key == "list-abc-0"
    assert files.add_once(envelope(), b"x\r\n", "list-abc-0") == first.id  # queued: once
    assert files.ids() == [first.id]
    other = envelope()
    assert files.add_once(other, b"x\r\n", "list-abc-1") == other.id
    # Sent and removed: the key says so, and the message is not queued again.
    with files.locked():
        assert files.discard(first.id, files.read(first.id).key)
    assert files.add_once(envelope(), b"x\r\n", "list-abc-0") == first.id
    assert files.ids() == [other.id]
    assert files.remove(other.id)  # ``ourmail queue delete`` marks it too
    assert files.add_once(envelope(), b"x\r\n", "list-abc-1") == other.id
    with pytest.raises(QueueError):
        files.add_once(envelope(), b"x\r\n", "../escape")


def test_keyed_messages_added_at_once_go_once_each(tmp_path: Path) -> None:
    """Threads add under two keys at the same time (the queue lock is held only for the key,
    not while a message is written): each key's message is queued exactly once."""
    files = QueueFiles(tmp_path / "queue")
    files.prepare()
    keys = ["list-abc-0", "list-abc-1"] * 8
    with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
        ids = list(pool.map(lambda k: files.add_once(envelope(), b"x\r\n" * 1000, k), keys))
    assert len(set(ids)) == 2 and sorted(files.ids()) == sorted(set(ids))
    assert {files.read(i).key for i in ids} == {"list-abc-0", "list-abc-1"}


def test_a_key_whose_message_was_never_committed_queues_it(tmp_path: Path) -> None:
    files = QueueFiles(tmp_path / "queue")
    files.prepare()
    # A crash after the key named its id, before the envelope was written.
    (files.keys / "list-abc-0").write_bytes(b"0123456789abcdef")
    again = envelope()
    assert files.add_once(again, b"x\r\n", "list-abc-0") == again.id
    assert files.ids() == [again.id]
    # Keys are forgotten after a week once their message has left the queue.
    with files.locked():
        files.discard(again.id, "list-abc-0")
    old = time.time() - 8 * 86400
    os.utime(files.keys / "list-abc-0", (old, old))
    assert files.remove_orphans() == 1
    assert not (files.keys / "list-abc-0").exists()
