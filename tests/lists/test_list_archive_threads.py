"""The archive's conversations (``ourmail/web/threads.py``): replies under what they answer,
orphaned replies with their subject's thread, newest activity first, loops and very deep
chains of hostile In-Reply-To fields cut or walked without recursion."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from ourmail.web.threads import (
    SLICE,
    Arrangement,
    Arrangements,
    Item,
    arrange,
    message_id,
    page_starts,
)


def item(uid: int, parent: int = 0, subject: str = "s", reply: bool = False) -> Item:
    return Item(uid, f"<m{uid}@x>", f"<m{parent}@x>" if parent else "", subject, reply, float(uid))


def shape(items: list[Item]) -> list[tuple[int, int, int]]:
    return [(p.uid, p.thread, p.depth) for p in arrange(items)]


def test_threads() -> None:
    items = [
        item(1, subject="plan"),
        item(2, subject="other"),
        item(3, parent=1, subject="plan", reply=True),
        item(4, parent=3, subject="plan", reply=True),
        item(5, parent=99, subject="plan", reply=True),  # its parent is not in the archive
        item(6, parent=1, subject="plan", reply=True),
    ]
    assert shape(items) == [(1, 0, 0), (3, 0, 1), (4, 0, 2), (5, 0, 1), (6, 0, 1), (2, 1, 0)]
    assert message_id(" <a@b> (comment) <c@d>") == "<a@b>" and message_id("none") == ""


def test_loops_and_deep_chains() -> None:
    loop = [item(1, parent=2), item(2, parent=1), item(3, parent=3)]
    placed = shape(loop)
    assert sorted(uid for uid, _, _ in placed) == [1, 2, 3]
    assert sum(1 for _, _, depth in placed if depth == 0) == 2
    deep = [item(1)] + [item(n, parent=n - 1) for n in range(2, 50001)]
    placed = shape(deep)
    assert len(placed) == 50000 and placed[-1] == (50000, 0, 49999)


def test_pages_are_bounded() -> None:
    """A page holds at most so many conversations and so many messages: a very long
    conversation goes on over the next pages."""
    long = [item(1)] + [item(n, parent=1) for n in range(2, 501)]
    others = [item(n, subject=f"s{n}") for n in range(1000, 1010)]
    placed = arrange(long + others)
    starts = page_starts(placed, threads=4, rows=200)
    sizes = [b - a for a, b in zip(starts, [*starts[1:], len(placed)], strict=True)]
    assert sum(sizes) == 510 and max(sizes) <= 200
    for a, b in zip(starts, [*starts[1:], len(placed)], strict=True):
        assert len({p.thread for p in placed[a:b]}) <= 4
    assert page_starts([], 30, 200) == [0]
    arrangement = Arrangement(placed, starts)
    assert arrangement.page(99) == arrangement.page(len(starts)) and arrangement.page(0)


class Summary:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


class Message:
    def __init__(self, folder: Folder, uid: int) -> None:
        self.folder, self.uid, self.internal_date = folder, uid, float(uid)

    def summary(self) -> Summary:
        self.folder.read += 1
        return Summary({"subject": f"topic {self.uid % 7}", "message-id": f"<m{self.uid}@x>"})


class Folder:
    """What the arrangements read of a store folder."""

    def __init__(self, count: int) -> None:
        self.uidvalidity, self.read = 1, 0
        self._uids = list(range(1, count + 1))

    @property
    def uidnext(self) -> int:
        return self._uids[-1] + 1

    def uids(self) -> list[int]:
        return self._uids

    def message(self, uid: int) -> Message:
        return Message(self, uid)


def test_arrangements_yield_to_the_reactor_and_read_new_messages_only() -> None:
    """The threading fields are read a slice at a time, the reactor running in between;
    arranging runs through ``run`` (a thread); a new post costs its own fields only."""
    clock = Clock()
    ran: list[object] = []

    def run(fn: Callable[..., object], *args: object) -> Deferred[object]:
        ran.append(fn)
        return succeed(fn(*args))

    arrangements = Arrangements(30, 200, run)
    folder = Folder(3 * SLICE)
    made = Deferred.fromCoroutine(arrangements.of("k", folder, clock))  # type: ignore[arg-type]
    assert not made.called and folder.read == SLICE  # the first slice, then the reactor
    clock.advance(0)
    clock.advance(0)
    assert made.called and folder.read == 3 * SLICE and len(ran) == 1
    first: Arrangement = made.result
    assert len(first.placed) == 3 * SLICE
    folder.uids().append(3 * SLICE + 1)
    again = Deferred.fromCoroutine(arrangements.of("k", folder, clock))  # type: ignore[arg-type]
    assert again.called and folder.read == 3 * SLICE + 1
    assert len(again.result.placed) == 3 * SLICE + 1
