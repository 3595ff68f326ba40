"""Per-destination connection limits and connection reuse in the queue (fake sessions)."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed

from ourmail.config import QueueSettings
from ourmail.queue.client import Outgoing, RcptResult
from ourmail.queue.mx import RouteError
from ourmail.queue.remote import Route
from ourmail.queue.runner import Destination, Job


class FakeSession:
    host = "mx.fake.test"

    def __init__(self, world: World) -> None:
        self.world = world
        self.sent = 0

    async def send(self, msg: Outgoing) -> list[RcptResult]:
        self.world.busy += 1
        self.world.most_busy = max(self.world.most_busy, self.world.busy)
        d: Deferred[None] = Deferred()
        self.world.waiting.append(d)
        await d
        self.world.busy -= 1
        self.sent += 1
        return [RcptResult(a, True, "2.0.0", "250 ok") for a, _ in msg.recipients]

    async def quit(self) -> None:
        self.world.per_connection.append(self.sent)


@attrs.define
class World:
    settings: QueueSettings
    unreachable: bool = False
    connections: int = 0
    busy: int = 0
    most_busy: int = 0
    waiting: list[Deferred[None]] = attrs.Factory(list)
    per_connection: list[int] = attrs.Factory(list)
    connector: Any = None

    def __attrs_post_init__(self) -> None:
        self.connector = self

    async def open(self, route: Route) -> FakeSession:
        if self.unreachable:
            raise RouteError("4.4.1", "connection refused")
        return FakeSession(self)

    def connection_closed(self) -> None:
        self.connections -= 1


def job(n: int, results: list[list[RcptResult]] | None = None) -> Job:
    """A job of one message; its recorded results are appended to ``results``."""
    kept = [] if results is None else results

    def record(found: list[RcptResult], host: str) -> Deferred[None]:
        kept.append(found)
        return succeed(None)

    return Job([Outgoing(f"a{n}@x.test", [("b@fake.test", None)], b"x")], record)  # type: ignore[list-item]


def test_connections_are_limited_and_reused() -> None:
    world = World(QueueSettings(max_per_destination=2, messages_per_connection=3))
    dest = Destination(world, Route("fake.test", "fake.test", 25))  # type: ignore[arg-type]
    jobs = [job(n) for n in range(7)]
    for j in jobs:
        dest.submit(j)
    while world.waiting:
        world.waiting.pop(0).callback(None)
    assert all(j.done.called for j in jobs)
    assert world.most_busy == 2  # never more than max_per_destination at once
    assert sorted(world.per_connection) == [1, 3, 3]  # up to 3 messages per connection
    assert world.connections == 0 and dest.workers == 0


def test_an_unreachable_destination_fails_every_waiting_job() -> None:
    world = World(QueueSettings(), unreachable=True)
    dest = Destination(world, Route("fake.test", "fake.test", 25))  # type: ignore[arg-type]
    results: list[list[RcptResult]] = []
    jobs = [job(n, results) for n in range(3)]
    for j in jobs:
        dest.submit(j)
    assert all(j.done.called for j in jobs)
    assert [r[0].status for r in results] == ["4.4.1"] * 3
