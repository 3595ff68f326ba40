"""The archive's conversations (``ourmail/web/threads.py``): replies under what they answer,
orphaned replies with their subject's thread, newest activity first, loops and very deep
chains of hostile In-Reply-To fields cut or walked without recursion."""

from __future__ import annotations

from ourmail.web.threads import Item, arrange, message_id


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
