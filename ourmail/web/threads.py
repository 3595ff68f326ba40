"""Conversations: a folder's messages arranged in threads, for the lists' archives.

In the spirit of RFC 5256 §2.2 (REFERENCES), on what the store's summaries keep: a message's
parent is the message its ``In-Reply-To`` names; a reply whose parent is not in the folder
joins the thread that began with the same subject (its ``Re:`` prefixes removed, §2.1).
Threads are shown newest activity first, each depth first with replies oldest first.  Loops
(forged or broken ``In-Reply-To``) are cut.  An arrangement is kept while the folder holds
the same messages (UIDVALIDITY, UIDNEXT and count fix the set, as in ``listing.Orders``).

The reactor never waits for a whole archive: each message's threading fields are read from
the store's summaries once and kept (a new post costs its own fields only); the store's
folders are touched only on the reactor thread (``store/folder.py``), so they are read
:data:`SLICE` messages at a time, the reactor serving others between two slices.  Arranging
and cutting into pages (:func:`page_starts`: at most so many conversations and so many
messages a page, a very long conversation going on over the next pages) run in a thread.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from ourmail.interfaces import IFolder
from ourmail.web.listing import subject_key

#: Arrangements kept in memory (each some words and a subject per message of its folder).
KEPT = 8
#: Messages whose threading fields are read in one turn of the reactor.
SLICE = 500
#: Longest subject kept for threading (a longer one is cut: it still groups the same).
SUBJECT_KEPT = 200
_MSGID = re.compile(r"<[^<>\s]{1,998}>")


@attrs.frozen
class Item:
    """What threading needs of one message."""

    uid: int
    message_id: str
    #: The Message-ID its ``In-Reply-To`` names ("" for none).
    parent_id: str
    #: The subject without its reply prefixes, lower-cased.
    subject: str
    reply: bool
    date: float


@attrs.frozen
class Placed:
    """A message's place in the arrangement: its thread (0 = newest) and depth (0 = root)."""

    uid: int
    thread: int
    depth: int


def message_id(value: str) -> str:
    """The first ``<id>`` of a Message-ID or In-Reply-To field, "" when there is none."""
    found = _MSGID.search(value)
    return found.group(0) if found else ""


def arrange(items: Sequence[Item]) -> list[Placed]:
    """``items`` in threads (see the module's documentation)."""
    by_id: dict[str, Item] = {}
    for item in items:
        if item.message_id:
            by_id.setdefault(item.message_id, item)
    parent: dict[int, Item] = {}
    for item in items:
        up = by_id.get(item.parent_id) if item.parent_id else None
        if up is not None and up.uid != item.uid:
            parent[item.uid] = up
    _cut_loops(items, parent)
    starters: dict[str, Item] = {}
    for item in sorted(items, key=lambda i: (i.date, i.uid)):
        if item.uid not in parent and not item.reply:
            starters.setdefault(item.subject, item)
    for item in items:  # a reply whose parent is not here: with its subject's thread
        starter = starters.get(item.subject)
        if item.uid not in parent and item.reply and starter is not None:
            parent[item.uid] = starter
    children: dict[int, list[Item]] = {}
    roots = []
    for item in items:
        if item.uid in parent:
            children.setdefault(parent[item.uid].uid, []).append(item)
        else:
            roots.append(item)
    latest: dict[int, float] = {}
    for root in roots:  # iteratively: a hostile chain of replies may be very deep
        best, below = root.date, [root]
        while below:
            item = below.pop()
            best = max(best, item.date)
            below.extend(children.get(item.uid, ()))
        latest[root.uid] = best
    roots.sort(key=lambda r: (latest[r.uid], r.uid), reverse=True)
    out: list[Placed] = []
    for number, root in enumerate(roots):
        stack = [(root, 0)]
        while stack:
            item, depth = stack.pop()
            out.append(Placed(item.uid, number, depth))
            replies = sorted(children.get(item.uid, ()), key=lambda i: (i.date, i.uid))
            stack.extend((child, depth + 1) for child in reversed(replies))
    return out


def _cut_loops(items: Sequence[Item], parent: dict[int, Item]) -> None:
    """Remove the parent link that closes each loop, so every chain ends at a root; each
    message is walked over once (chains known to end well are not walked again)."""
    rooted: set[int] = set()
    for item in items:
        path: set[int] = set()
        at = item
        while at.uid not in rooted:
            path.add(at.uid)
            up = parent.get(at.uid)
            if up is None:
                break
            if up.uid in path:
                del parent[at.uid]
                break
            at = up
        rooted |= path


def item_of(folder: IFolder, uid: int) -> Item | None:
    """The threading fields of message ``uid`` (from the store's summary); None when it was
    expunged meanwhile or its cache record is damaged."""
    try:
        message = folder.message(uid)
        headers = message.summary().headers
    except (KeyError, ValueError):
        return None
    subject = headers.get("subject", "")
    base = subject_key(subject).strip().lower()
    return Item(
        uid=uid,
        message_id=message_id(headers.get("message-id", "")),
        parent_id=message_id(headers.get("in-reply-to", "")),
        subject=base[:SUBJECT_KEPT],
        reply=base != subject.strip().lower(),
        date=message.internal_date,
    )


def items_of(folder: IFolder) -> list[Item]:
    """The threading fields of every message of ``folder`` (from the store's summaries)."""
    found = (item_of(folder, uid) for uid in folder.uids())
    return [item for item in found if item is not None]


def page_starts(placed: Sequence[Placed], threads: int, rows: int) -> list[int]:
    """Where each page begins in ``placed``: a page holds at most ``threads`` conversations
    and ``rows`` messages; always one page at least."""
    starts = [0]
    first_thread, count = placed[0].thread if placed else 0, 0
    for i, p in enumerate(placed):
        if count == rows or p.thread >= first_thread + threads:
            starts.append(i)
            first_thread, count = p.thread, 0
        count += 1
    return starts


@attrs.frozen
class Arrangement:
    """A folder's messages in threads, cut into pages."""

    placed: list[Placed]
    #: Where each page begins in ``placed`` (see :func:`page_starts`).
    starts: list[int]

    def page(self, number: int) -> list[Placed]:
        """Page ``number`` (1-based, clamped to the pages there are)."""
        number = min(max(1, number), len(self.starts))
        end = self.starts[number] if number < len(self.starts) else len(self.placed)
        return self.placed[self.starts[number - 1] : end]


@attrs.define
class _Kept:
    stamp: tuple[int, int, int]
    #: UID -> threading fields, for the folder's UIDVALIDITY (the stamp's first).
    items: dict[int, Item]
    arrangement: Arrangement


class Arrangements:
    """The threads of recently shown folders, kept while each holds the same messages."""

    def __init__(
        self, threads: int, rows: int, run: Callable[..., Deferred[Any]] = deferToThread
    ) -> None:
        self.threads, self.rows, self._run = threads, rows, run
        self._kept: OrderedDict[str, _Kept] = OrderedDict()

    async def of(self, key: str, folder: IFolder, clock: IReactorTime) -> Arrangement:
        """The arrangement of ``folder``, known as ``key``: kept while its messages are the
        same, else made again from the fields kept and those of the new messages (read
        :data:`SLICE` at a time on the reactor), arranged in a thread."""
        stamp = (folder.uidvalidity, folder.uidnext, len(folder.uids()))
        kept = self._kept.get(key)
        if kept is not None and kept.stamp == stamp:
            self._kept.move_to_end(key)
            return kept.arrangement
        known = kept.items if kept is not None and kept.stamp[0] == stamp[0] else {}
        uids = list(folder.uids())
        items = {uid: known[uid] for uid in uids if uid in known}
        missing = [uid for uid in uids if uid not in known]
        for at in range(0, len(missing), SLICE):
            if at:
                await deferLater(clock, 0, lambda: None)  # let the reactor serve others
            for uid in missing[at : at + SLICE]:
                item = item_of(folder, uid)
                if item is not None:
                    items[uid] = item
        arrangement: Arrangement = await self._run(self._arrange, list(items.values()))
        self._kept[key] = _Kept(stamp, items, arrangement)
        self._kept.move_to_end(key)
        if len(self._kept) > KEPT:
            self._kept.popitem(last=False)
        return arrangement

    def _arrange(self, items: list[Item]) -> Arrangement:
        """In a thread: ``items`` in threads and pages."""
        placed = arrange(items)
        return Arrangement(placed, page_starts(placed, self.threads, self.rows))
