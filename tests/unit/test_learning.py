"""Learning from Junk moves without a server: which moves teach what, the durable queue's
once-per-direction key, back-off, giving up, and messages too large or gone."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import _ensure_reactor
from learnerhelp import MemoryLearner
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread

from ourmail.config import ConfigError, LearningSettings, load_settings
from ourmail.filters import learning as learning_module
from ourmail.filters.learning import JunkLearning, direction, read_messages
from ourmail.filters.learnqueue import LEARNED, Added, LearnQueue


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (None, "\\Junk", True),
        ("\\Trash", "\\Junk", True),
        ("\\Junk", None, False),
        ("\\Junk", "\\Archive", False),
        ("\\Junk", "\\Trash", None),
        ("\\Junk", "\\Junk", None),
        (None, "\\Trash", None),
        (None, None, None),
    ],
)
def test_direction(source: str | None, target: str | None, expected: bool | None) -> None:
    assert direction(source, target) is expected


def test_the_queue_keys_by_user_content_and_direction(tmp_path: Path) -> None:
    q = LearnQueue(tmp_path / "l.sqlite")
    assert q.add("a@x.test", True, [b"one", b"two", b"one"], 1.0).new == 2
    assert q.add("a@x.test", True, [b"one"], 2.0).new == 0  # the same direction again
    # The other direction (and the pending spam request of "one" is cancelled: never taught).
    assert q.add("a@x.test", False, [b"one"], 3.0).new == 1
    assert q.add("b@x.test", True, [b"one"], 4.0).new == 1  # another user
    due = q.due(10.0, 100)
    assert [(r.user, r.message, r.spam) for r in due] == [
        ("a@x.test", b"two", True),
        ("a@x.test", b"one", False),
        ("b@x.test", b"one", True),
    ]
    q.finish(due[0], LEARNED, 11.0)
    assert q.add("a@x.test", True, [b"two"], 12.0).new == 0  # learned: still remembered
    q.retry(due[1], 50.0)
    assert [r.message for r in q.due(20.0, 100)] == [b"one"]
    assert q.next_due() == 4.0
    assert q.counts() == {"pending": 2, "learned": 1}
    assert q.prune(11.5) == 1  # a learned key is forgotten after remember_days
    assert q.add("a@x.test", True, [b"two"], 13.0).new == 1


def test_learning_a_direction_forgets_the_other(tmp_path: Path) -> None:
    q = LearnQueue(tmp_path / "l.sqlite")
    taught = []

    def move(spam: bool, now: float) -> None:
        q.add("a@x.test", spam, [b"msg"], now)
        for request in q.due(now, 10):
            taught.append(request.spam)
            q.finish(request, LEARNED, now)

    for spam, now in [(True, 1.0), (True, 2.0), (False, 3.0), (False, 4.0), (True, 5.0)]:
        move(spam, now)
    assert taught == [True, False, True]  # spam, ham, spam again; never twice in a row
    assert q.counts() == {"learned": 1}


def test_the_last_move_wins_before_the_scanner_is_told(tmp_path: Path) -> None:
    q = LearnQueue(tmp_path / "l.sqlite")
    q.add("a@x.test", True, [b"msg"], 1.0)
    q.finish(q.due(1.0, 10)[0], LEARNED, 1.0)  # taught spam
    q.add("a@x.test", False, [b"msg"], 2.0)  # out of Junk, the scanner is down...
    q.add("a@x.test", True, [b"msg"], 3.0)  # ... and back: the ham request is cancelled
    assert q.due(10.0, 10) == [] and q.counts() == {"learned": 1}
    q.add("a@x.test", False, [b"msg"], 4.0)
    (ham,) = q.due(10.0, 10)  # being taught as ham when it is moved back into Junk:
    q.add("a@x.test", True, [b"msg"], 5.0)
    q.finish(ham, LEARNED, 6.0)
    assert [(r.message, r.spam) for r in q.due(10.0, 10)] == [(b"msg", True)]  # spam again


def test_the_queue_is_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    q = LearnQueue(tmp_path / "l.sqlite", max_pending=3, max_bytes=100)
    assert q.add("a@x.test", True, [b"1", b"2"], 1.0) == Added(new=2, full=0)
    assert q.has_room()
    # What fits is queued, the rest counted; one already queued needs no room.
    assert q.add("a@x.test", True, [b"3", b"4", b"1"], 1.0) == Added(new=1, full=1)
    assert not q.has_room() and q.counts() == {"pending": 3}
    q.finish(q.due(2.0, 1)[0], LEARNED, 2.0)
    assert q.add("a@x.test", True, [b"x" * 98, b"y" * 97], 3.0) == Added(new=1, full=1)
    assert not q.has_room()  # 100 bytes wait


def test_a_large_transfer_is_queued_in_chunks_while_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(learning_module, "CHUNK", 3)
    reads: list[int] = []

    def counting(files: Any, max_size: int) -> list[bytes]:
        reads.append(len(files))
        return read_messages(files, max_size)

    monkeypatch.setattr(learning_module, "read_messages", counting)
    files = []
    for i in range(20):
        files.append(tmp_path / f"m{i}")
        files[-1].write_bytes(b"message %d" % i)
    service = JunkLearning(
        LearnQueue(tmp_path / "l.sqlite", max_pending=7), MemoryLearner(), reactor
    )
    d = run(service.transferring, "a@x.test", None, "\\Junk", files)
    assert d is None  # the move goes on
    assert service.queue.counts() == {"pending": 7}
    assert reads == [3, 3, 3]  # one chunk a transaction, nothing read once full


def test_too_large_and_vanished_messages_are_not_learned(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"x" * 100)
    large.write_bytes(b"x" * 101)
    assert read_messages([small, large, tmp_path / "gone"], 100) == [b"x" * 100]


def run(f: Any, *args: Any) -> Any:
    _ensure_reactor()
    return blockingCallFromThread(reactor, f, *args)


def learning(tmp_path: Path, learner: MemoryLearner, **settings: Any) -> JunkLearning:
    config = LearningSettings(**({"retry_min": 10.0, "retry_max": 25.0} | settings))
    return JunkLearning.at(tmp_path, learner, reactor, config)


def test_back_off_doubles_up_to_retry_max(tmp_path: Path) -> None:
    learner = MemoryLearner(down=True)
    service = learning(tmp_path, learner)
    service.queue.add("a@x.test", True, [b"spam"], time.time())
    waits = []
    for _ in range(3):
        (request,) = service.queue.due(time.time() + 1000, 10)  # due or not
        start = time.time()
        run(lambda r=request: Deferred.fromCoroutine(service._teach(r)))
        waits.append(round(service.queue.next_due() - start))  # type: ignore[operator]
    assert waits == [10, 20, 25]
    assert learner.calls == 3 and service.queue.counts() == {"pending": 1}


def test_the_back_off_survives_very_many_attempts(tmp_path: Path) -> None:
    learner = MemoryLearner(down=True)
    service = learning(tmp_path, learner, give_up=1e9)
    service.queue.add("a@x.test", True, [b"spam"], time.time())
    (request,) = service.queue.due(time.time(), 10)
    old = attrs.evolve(request, attempts=5000)  # 2.0**5000 overflows a float
    start = time.time()
    assert run(lambda: Deferred.fromCoroutine(service._teach(old))) is False
    assert 20 < service.queue.next_due() - start <= 26  # type: ignore[operator]


def test_a_pass_stops_at_the_first_refusal(tmp_path: Path) -> None:
    learner = MemoryLearner(down=True)
    service = learning(tmp_path, learner)
    service.queue.add("a@x.test", True, [b"a", b"b", b"c"], time.time())
    run(service.run)
    assert learner.calls == 1  # the scanner is down: the others wait too


def test_a_scanner_down_is_tried_once_per_back_off(tmp_path: Path) -> None:
    learner = MemoryLearner(down=True)
    service = learning(tmp_path, learner)
    service.queue.add("a@x.test", True, [b"a", b"b", b"c", b"d", b"e"], time.time())
    start = time.time()
    run(service.startService)
    try:
        timer = wait_for_timer(service)
        assert 5 < timer.getTime() - start <= 11  # the failed request's retry (retry_min)
        assert learner.calls == 1  # not one attempt per due request
        run(service.wake)  # as a move queueing more does
        time.sleep(0.2)
        assert learner.calls == 1 and service._timer is timer and timer.active()
    finally:
        run(service.stopService)


def test_a_request_is_given_up_after_give_up_seconds(tmp_path: Path) -> None:
    learner = MemoryLearner(down=True)
    service = learning(tmp_path, learner, give_up=60.0)
    service.queue.add("a@x.test", True, [b"old"], time.time() - 120)
    service.queue.add("a@x.test", True, [b"new"], time.time())
    run(service.run)
    assert service.queue.counts() == {"dropped": 1, "pending": 1}


def test_learned_requests_lose_their_message(tmp_path: Path) -> None:
    learner = MemoryLearner()
    service = learning(tmp_path, learner)
    service.queue.add("a@x.test", False, [b"ham"], time.time())
    run(service.run)
    assert learner.taught == [("a@x.test", b"ham", False)]
    assert service.queue.counts() == {"learned": 1} and service.queue.next_due() is None
    assert service.queue.due(time.time() + 1e6, 10) == []


def settings_from(tmp_path: Path, text: str) -> Any:
    (tmp_path / "ourmail.toml").write_text(text)
    return load_settings(data=str(tmp_path), hostname="mx.example.test")


def test_learning_and_log_settings_are_read(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        "[filters.learning]\nretry_min = 5\nmax_size = 1000\nmax_queue_bytes = 5000\n"
        "[filters.log]\nretention_days = 7\n",
    )
    assert settings.filters.learning == LearningSettings(
        retry_min=5, max_size=1000, max_queue_bytes=5000
    )
    assert settings.filters.log.retention_days == 7 and settings.filters.log.enabled


@pytest.mark.parametrize(
    "text",
    [
        "[filters.learning]\nretry_min = 0\n",
        "[filters.learning]\nretry_min = 10\nretry_max = 5\n",
        "[filters.learning]\nmax_size = -1\n",
        "[filters.learning]\nmax_queue_bytes = 0\n",
        "[filters.learning]\nenabled = 1\n",
        "[filters.learning]\nnosuch = 1\n",
        "[filters.log]\nretention_days = 0\n",
    ],
)
def test_bad_learning_and_log_settings_are_config_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        settings_from(tmp_path, text)


def test_a_queue_that_cannot_be_read_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = learning(tmp_path, MemoryLearner())

    def broken(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(service.queue, "due", broken)
    run(service.startService)
    try:
        timer = wait_for_timer(service)
        assert 20 < timer.getTime() - time.time() <= 25  # retry_max, not a tight loop
    finally:
        run(service.stopService)


def wait_for_timer(service: JunkLearning) -> Any:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        timer = service._timer
        if timer is not None and timer.active():
            return timer
        time.sleep(0.02)
    raise AssertionError("no retry was scheduled")
