"""Conversations: a folder's messages arranged in threads, for the lists' archives.

In the spirit of RFC 5256 §2.2 (REFERENCES), on what the store's summaries keep: a message's
parent is the message its ``In-Reply-To`` names; a reply whose parent is not in the folder
joins the thread that began with the same subject (its ``Re:`` prefixes removed, §2.1).
Threads are shown newest activity first, each depth first with replies oldest first.  Loops
(forged or broken ``In-Reply-To``) are cut.  An arrangement is kept while the folder holds
the same messages (UIDVALIDITY, UIDNEXT and count fix the set, as in ``listing.Orders``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

import attrs
from twisted.internet.threads import deferToThread

from ourmail.interfaces import IFolder
from ourmail.web.listing import subject_key

#: Arrangements kept in memory (each a few words per message of its folder).
KEPT = 16
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


def items_of(folder: IFolder) -> list[Item]:
    """The threading fields of every message of ``folder`` (from the store's summaries)."""
    items = []
    for uid in folder.uids():
        try:
            message = folder.message(uid)
            headers = message.summary().headers
        except (KeyError, ValueError):  # expunged meanwhile, or a damaged cache record
            continue
        subject = headers.get("subject", "")
        base = subject_key(subject).strip().lower()
        items.append(
            Item(
                uid=uid,
                message_id=message_id(headers.get("message-id", "")),
                parent_id=message_id(headers.get("in-reply-to", "")),
                subject=base,
                reply=base != subject.strip().lower(),
                date=message.internal_date,
            )
        )
    return items


class Arrangements:
    """The threads of recently shown folders, kept while each holds the same messages."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, tuple[tuple[int, int, int], list[Placed]]] = OrderedDict()

    async def of(self, key: str, folder: IFolder) -> list[Placed]:
        """The arrangement of ``folder``, known as ``key`` (made again, in a thread, when its
        messages changed: about 2.5 s for 100,000 messages)."""
        stamp = (folder.uidvalidity, folder.uidnext, len(folder.uids()))
        kept = self._kept.get(key)
        if kept is not None and kept[0] == stamp:
            self._kept.move_to_end(key)
            return kept[1]
        placed = await deferToThread(arrange, items_of(folder))
        self._kept[key] = (stamp, placed)
        if len(self._kept) > KEPT:
            self._kept.popitem(last=False)
        return placed
