"""What a message list sorts on, from the store's indexes (IFolder.uids_ordered and
IFolder.header_values): it agrees with a message-by-message walk in both stores, follows
appends and expunges, sees another process's deliveries, and survives a rebuilt cache; and
sorting a list opens no message, a page only its own."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from storehelp import on_reactor

from ourmail.interfaces import IFolder
from ourmail.store import cache
from ourmail.store.folder import MaildirFolder
from ourmail.store.memory import MemoryStore
from ourmail.store.userstore import MaildirStore, ensure_default_folders
from ourmail.web.listing import PAGE_SIZE, SORTS, page_of, rows_of, sort_order, subject_key

BASE = 1_780_000_000.0


def message(i: int, rng: random.Random) -> bytes:
    subject = rng.choice(["Re: ", "", "Fwd: "]) + f"Θέμα {rng.randrange(100)}"
    sender = f"=?UTF-8?B?zpzOsc+Bzq/OsQ==?= <m{i}@b.c>" if i % 3 else f"x{i}@b.c"
    head = f"From: {sender}\r\nTo: t{i % 5}@b.c\r\nSubject: {subject}\r\n\r\n"
    return head.encode() + b"body\r\n" * rng.randrange(20)


@pytest.fixture(params=["maildir", "memory"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IFolder]:
    if request.param == "memory":
        yield MemoryStore().user("alice@example.org").folder("INBOX")
        return
    user = MaildirStore(tmp_path).user("alice@example.org")
    ensure_default_folders(user)
    yield user.folder("INBOX")


def walked(folder: IFolder) -> dict[str, object]:
    messages = [folder.message(u) for u in folder.uids()]
    return {
        "date": [m.uid for m in sorted(messages, key=lambda m: (m.internal_date, m.uid))],
        "size": [m.uid for m in sorted(messages, key=lambda m: (m.size, m.uid))],
        "from": {m.uid: m.summary().headers.get("from", "").lower() for m in messages},
        "subject": {m.uid: m.summary().headers.get("subject", "").lower() for m in messages},
    }


def assert_agrees(folder: IFolder) -> None:
    expected = walked(folder)
    assert list(folder.uids_ordered("date")) == expected["date"]
    assert list(folder.uids_ordered("size")) == expected["size"]
    for field in ("from", "subject"):
        values = folder.header_values(field)
        assert {u: values[u] for u in folder.uids()} == expected[field]


def test_orders_and_values_agree_with_the_messages(folder: IFolder) -> None:
    rng = random.Random(7)
    for i in range(60):
        on_reactor(folder.append, message(i, rng), (), BASE + rng.randrange(-5, 5) * 3600)
    assert_agrees(folder)
    assert folder.header_values("from")[2] == "μαρία <m1@b.c>"  # UID 2: i = 1
    folder.expunge(rng.sample(list(folder.uids()), 20))
    assert_agrees(folder)
    for i in range(60, 70):
        on_reactor(folder.append, message(i, rng), (), BASE + rng.randrange(-5, 5) * 3600)
    assert_agrees(folder)
    with pytest.raises(ValueError):
        folder.uids_ordered("subject")  # type: ignore[arg-type]


def test_another_process_and_a_lost_cache(tmp_path: Path) -> None:
    rng = random.Random(3)
    user = MaildirStore(tmp_path).user("alice@example.org")
    ensure_default_folders(user)
    mine = user.folder("INBOX")
    for i in range(10):
        on_reactor(mine.append, message(i, rng), (), BASE + i)
    assert len(mine.header_values("subject")) == 10
    other = MaildirStore(tmp_path).user("alice@example.org").folder("INBOX")
    for i in range(10, 15):
        on_reactor(other.append, message(i, rng), (), BASE + i)
    mine.sync()
    assert_agrees(mine)
    assert isinstance(mine, MaildirFolder)
    # The summary cache and search file are only caches: gone, they are made again.
    (mine.path / "ourmail-cache").unlink()
    (mine.path / "ourmail-search").unlink()
    assert_agrees(mine)


class Counting:
    """A folder that counts the messages opened through it."""

    def __init__(self, folder: IFolder) -> None:
        self.folder = folder
        self.opened = 0

    def message(self, uid: int) -> object:
        self.opened += 1
        return self.folder.message(uid)

    def __getattr__(self, name: str) -> object:
        return getattr(self.folder, name)


def test_a_sorted_page_opens_only_its_own_messages(folder: IFolder) -> None:
    rng = random.Random(5)
    for i in range(120):
        on_reactor(folder.append, message(i, rng), (), BASE + rng.randrange(-5, 5) * 3600)
    counting = Counting(folder)
    for key in SORTS:
        order = sort_order(counting, key)  # type: ignore[arg-type]
        assert sorted(order) == list(folder.uids())
        assert counting.opened == 0, key
        page = page_of(order, True, 2)
        assert len(rows_of(counting, "INBOX", page.uids)) == PAGE_SIZE  # type: ignore[arg-type]
        assert counting.opened == PAGE_SIZE
        counting.opened = 0
    subjects = [
        subject_key(folder.header_values("subject")[u]) for u in sort_order(folder, "subject")
    ]
    assert subjects == sorted(subjects) and not any(s.startswith(("re:", "fwd:")) for s in subjects)


def test_the_column_is_read_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    user = MaildirStore(tmp_path).user("alice@example.org")
    ensure_default_folders(user)
    inbox = user.folder("INBOX")
    for i in range(30):
        on_reactor(inbox.append, message(i, rng))
    whole = dict(inbox.header_values("subject"))
    monkeypatch.setattr(cache, "COLUMN_CHUNK", 7)  # lines span many pieces
    assert isinstance(inbox, MaildirFolder)
    inbox.cache._columns.clear()
    assert inbox.header_values("subject") == whole
    # A line being written (no newline yet) is left for the next call.
    with open(inbox.path / "ourmail-search", "a", encoding="utf-8") as f:
        f.write("99\x1fa\x1fb\x1f\x1f\x1fhalf a lin")
    assert 99 not in inbox.cache.column("subject")
    with open(inbox.path / "ourmail-search", "a", encoding="utf-8") as f:
        f.write("e\n")
    assert inbox.cache.column("subject")[99] == "half a line"
