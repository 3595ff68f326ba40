"""The list service with fake handlers: dispatch by role, owner forwarding, confirmations,
retry with back-off, setting aside, a restart picking up the spool, the periodic jobs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import _ensure_reactor
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import formatEvent, globalLogPublisher

from ourmail.config import ListsSettings
from ourmail.interfaces import ListArrival
from ourmail.lists import tokens
from ourmail.lists.context import ListContext
from ourmail.lists.listdb import ListDB, Token
from ourmail.lists.model import ListSettings
from ourmail.lists.service import GIVE_UP, ListService

MESSAGE = b"From: p@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
NOW = 1_800_000_000.0


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], bytes, bool]] = []

    def enqueue(self, sender: str, recipients: Any, content: Any, *args: Any, **kw: Any) -> Any:
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        self.sent.append((sender, [r for r, _ in recipients], data, kw.get("forwarded", False)))
        return succeed(f"q{len(self.sent)}")


class Setup:
    def __init__(self, root: Path) -> None:
        _ensure_reactor()
        self.queue = FakeQueue()
        self.now = NOW
        self.ctx = ListContext(
            db=ListDB(root / "lists.sqlite"),
            root=root,
            directory=None,  # type: ignore[arg-type]
            store=None,  # type: ignore[arg-type]
            queue=self.queue,  # type: ignore[arg-type]
            settings=ListsSettings(),
            hostname="mail.example.test",
            web_url="https://mail.example.test",
            secret=b"k" * 32,
            clock=lambda: self.now,
        )
        self.lst = ListSettings(
            "team@example.test", owners=("boss@example.test",), moderators=("mod@example.org",)
        )
        self.ctx.db.create(self.lst, NOW)
        self.calls: list[tuple[str, str, bytes]] = []
        self.failures = 0
        self.scheduler = task.Clock()

    def handler(self, role: str) -> Callable[..., Any]:
        async def handle(ctx: ListContext, lst: ListSettings, arrival: ListArrival, path: Path):
            if self.failures:
                self.failures -= 1
                raise RuntimeError("the part failed")
            self.calls.append((role, arrival.id, path.read_bytes()))

        return handle

    def service(self, **kw: Any) -> ListService:
        roles = ("post", "request", "join", "leave", "bounces")
        kw.setdefault("handlers", {r: self.handler(r) for r in roles})
        kw.setdefault("jobs", lambda: [])
        kw.setdefault("watch_every", 1e9)  # the tests move the clock: no look in between
        return ListService(self.ctx, self.scheduler, **kw)

    def call(self, f: Callable[..., Any], *args: Any) -> Any:
        return blockingCallFromThread(reactor, f, *args)

    def start(self, service: ListService) -> None:
        self.call(service.startService)
        self.settle(service)

    def settle(self, service: ListService) -> None:
        """Wait until the service has loaded its table and handled what it can now."""

        def loaded() -> Deferred[None]:
            return service.reload().addCallback(lambda _: service.drained())

        self.call(loaded)
        self.call(service.drained)

    def accept(self, service: ListService, to: str, sender: str, id: str) -> None:
        arrival = ListArrival(to, sender, "192.0.2.1", "", id, self.now, len(MESSAGE))
        self.call(service.accept, arrival, MESSAGE)
        self.call(service.drained)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path / "lists")
    yield s


def test_roles_are_dispatched_and_the_spool_emptied(setup: Setup) -> None:
    service = setup.service()
    setup.start(service)
    assert service.handles("team@example.test") and service.handles("team-join@example.test")
    assert service.handles("team-bounces+x=example.org@example.test")
    assert not service.handles("team-join+x@example.test") and not service.handles("alice@x.test")
    assert service.refusal("team@example.test", 60 * 1024 * 1024).startswith("552 5.3.4")
    assert service.refusal("team@example.test", 10 * 1024 * 1024) is None
    setup.ctx.settings = ListsSettings(enabled=False)  # [lists] enabled = false
    assert not service.handles("team@example.test")
    setup.ctx.settings = ListsSettings()
    for n, to in enumerate(["team@", "team-request@", "team-leave@", "team-bounces+a=b.org@"]):
        setup.accept(service, to + "example.test", "p@example.org", f"id{n}")
    assert [(r, i) for r, i, _ in setup.calls] == [
        ("post", "id0"),
        ("request", "id1"),
        ("leave", "id2"),
        ("bounces", "id3"),
    ]
    assert all(m == MESSAGE for _, _, m in setup.calls)
    assert service.spool.pending() == []
    setup.call(service.stopService)


def test_owner_mail_is_forwarded_and_never_loops(setup: Setup) -> None:
    service = setup.service()
    setup.start(service)
    setup.accept(service, "team-owner@example.test", "p@example.org", "o1")
    setup.accept(service, "team-owner@example.test", "team-bounces@example.test", "o2")
    assert setup.queue.sent == [
        ("team-bounces@example.test", ["boss@example.test", "mod@example.org"], MESSAGE, True)
    ]
    assert service.spool.pending() == []
    setup.call(service.stopService)


def test_confirmations_reach_their_confirmer_once(setup: Setup) -> None:
    confirmed: list[tuple[Token, str]] = []

    async def confirm(ctx: ListContext, lst: ListSettings, token: Token, by: str) -> str:
        confirmed.append((token, by))
        return "subscribed"

    service = setup.service(confirmers={"subscribe": confirm})
    setup.ctx.db.create(ListSettings("other@example.test", owners=("boss@example.test",)), NOW)
    setup.start(service)
    lines: list[str] = []
    observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    token = setup.call(tokens.issue, setup.ctx, "team@example.test", "new@example.org", "subscribe")
    # Another list's confirmation address: unknown there, and left for its own list.
    setup.accept(service, f"other-confirm+{token}@example.test", "new@example.org", "c0")
    assert confirmed == [] and len(setup.queue.sent) == 1
    setup.queue.sent.clear()
    to = f"team-confirm+{token}@example.test"
    setup.accept(service, to, "new@example.org", "c1")
    assert [(t.address, t.action, by) for t, by in confirmed] == [
        ("new@example.org", "subscribe", "new@example.org (unverified)")
    ]
    # Used up: a replay gets a short reply; a bounce (null sender) gets none.
    setup.accept(service, to, "new@example.org", "c2")
    setup.accept(service, "team-confirm+0123456789abcdef0123456789@example.test", "", "c3")
    assert len(confirmed) == 1
    assert [(s, r) for s, r, _, _ in setup.queue.sent] == [
        ("team-bounces@example.test", ["new@example.org"])
    ]
    reply = setup.queue.sent[0][2]
    assert b"Auto-Submitted: auto-generated" in reply and token.encode() not in reply
    # Replies about unknown tokens are rate-limited per sender.
    for n in range(5):
        setup.accept(service, to, "new@example.org", f"r{n}")
    assert len(setup.queue.sent) == 2  # one more, then silence (the first was "other")
    globalLogPublisher.removeObserver(observer)
    assert any("c1" in line for line in lines) and not any(token in line for line in lines)
    setup.call(service.stopService)


def test_a_confirmer_that_fails_leaves_the_token_for_the_retry(setup: Setup) -> None:
    attempts: list[str] = []

    async def confirm(ctx: ListContext, lst: ListSettings, token: Token, by: str) -> str:
        attempts.append(token.address)
        if len(attempts) == 1:
            raise RuntimeError("the database is locked")  # or a crash: the token stays
        return "subscribed"

    service = setup.service(confirmers={"subscribe": confirm})
    setup.start(service)
    token = setup.call(tokens.issue, setup.ctx, "team@example.test", "new@example.org", "subscribe")
    setup.accept(service, f"team-confirm+{token}@example.test", "new@example.org", "c1")
    assert attempts == ["new@example.org"] and len(service.spool.pending()) == 1
    assert setup.call(tokens.peek, setup.ctx, token) is not None  # not used up
    setup.now += 60
    setup.call(setup.scheduler.advance, 60)
    setup.call(service.drained)
    assert attempts == ["new@example.org"] * 2 and service.spool.pending() == []
    assert setup.queue.sent == []  # no "unknown confirmation" reply
    assert setup.call(tokens.peek, setup.ctx, token) is None  # used up now
    setup.call(service.stopService)


def test_two_confirmations_of_one_token_at_once_act_once(setup: Setup) -> None:
    acted: list[str] = []

    async def act(token: Token) -> str:
        acted.append(token.address)
        return "done"

    token = setup.call(tokens.issue, setup.ctx, "team@example.test", "new@example.org", "subscribe")

    def both() -> Deferred[list[Any]]:
        # Both begin before either has looked the token up (the look-up is in a thread).
        first = Deferred.fromCoroutine(tokens.use(setup.ctx, token, act))
        second = Deferred.fromCoroutine(tokens.use(setup.ctx, token, act))
        return gatherResults([first, second])

    first, second = setup.call(both)
    assert first is not None and first[1] == "done" and second is None
    assert acted == ["new@example.org"]


def test_a_failing_handler_is_retried_then_set_aside(setup: Setup) -> None:
    service = setup.service()
    setup.start(service)
    setup.failures = 2
    setup.accept(service, "team@example.test", "p@example.org", "f1")
    assert setup.calls == [] and len(service.spool.pending()) == 1
    # Not before its time; then again after the back-off (60 s, then 120 s).
    setup.call(setup.scheduler.advance, 30)
    setup.call(service.drained)
    assert setup.failures == 1
    setup.now += 60
    setup.call(setup.scheduler.advance, 30)
    setup.call(service.drained)
    assert setup.failures == 0 and setup.calls == []
    setup.now += 120
    setup.call(setup.scheduler.advance, 120)
    setup.call(service.drained)
    assert [i for _, i, _ in setup.calls] == ["f1"] and service.spool.pending() == []
    # An arrival that keeps failing for a day is moved to failed/.
    setup.failures = 1
    setup.accept(service, "team@example.test", "p@example.org", "f2")
    setup.failures = 1
    setup.now += GIVE_UP
    setup.call(setup.scheduler.advance, 3600)
    setup.call(service.drained)
    assert service.spool.pending() == []
    failed = sorted(os.listdir(setup.ctx.root / "failed"))
    assert len(failed) == 2 and failed[0].endswith(".eml") and failed[1].endswith(".json")
    setup.call(service.stopService)


def test_a_restart_handles_what_was_spooled(setup: Setup) -> None:
    before = setup.service()
    setup.start(before)
    setup.call(before.stopService)  # stopped: keeps arrivals, handles none
    for n in range(3):
        setup.call(before.accept, ListArrival("team@example.test", "p@x.org", id=f"s{n}"), MESSAGE)
    assert len(before.spool.pending()) == 3 and setup.calls == []
    after = setup.service()
    setup.start(after)
    assert [i for _, i, _ in setup.calls] == ["s0", "s1", "s2"]
    assert after.spool.pending() == []
    setup.call(after.stopService)


def test_periodic_jobs_run_despite_a_failing_one(setup: Setup) -> None:
    ran: list[str] = []

    async def broken(ctx: ListContext) -> None:
        raise RuntimeError("broken job")

    async def fine(ctx: ListContext) -> None:
        ran.append("fine")

    service = setup.service(jobs=lambda: [broken, fine])
    setup.call(tokens.issue, setup.ctx, "team@example.test", "x@example.org", "subscribe")
    setup.now += 10 * 24 * 3600
    setup.call(service.periodic)
    assert ran == ["fine"]
    assert setup.ctx.db.expire_tokens(setup.now) == 0  # the job removed the expired one


def test_what_an_mx_worker_keeps_the_main_process_handles(setup: Setup) -> None:
    main = setup.service()
    setup.start(main)
    worker = setup.service(process=False)
    setup.start(worker)
    assert worker.handles("team@example.test")
    setup.accept(worker, "team@example.test", "p@example.org", "w1")
    assert setup.calls == [] and len(worker.spool.pending()) == 1
    # The main process's next look at the spool's mark finds it.
    setup.call(main._watch)
    setup.call(main.drained)
    assert [i for _, i, _ in setup.calls] == ["w1"] and main.spool.pending() == []
    setup.call(worker.stopService)
    setup.call(main.stopService)
