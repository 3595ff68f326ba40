"""The message list of a folder: its order, its pages and the rows shown for them.

Sorting never opens a message: dates and sizes come from the store's index
(:meth:`IFolder.uids_ordered`), senders and subjects from its search index
(:meth:`IFolder.header_values`).  A sorted order is kept in :class:`Orders` while the
folder holds the same messages (same UIDVALIDITY, UIDNEXT and count: UIDs only ever come at
UIDNEXT, so these three fix the set), so turning pages, marking messages read or coming back
to the list costs a slice of a list and the summaries of one page's messages.
"""

from __future__ import annotations

import datetime
import re
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from email.utils import getaddresses

import attrs
from babel import dates
from babel.numbers import format_decimal

from ourmail.interfaces import IFolder, IStoredMessage
from ourmail.mime.outline import BodyPart

#: The orders a list can have (the ``sort`` query parameter), the first the default.
SORTS = ("date", "from", "subject", "size")
#: Messages on one page of the list.
PAGE_SIZE = 50
#: Sorted orders kept in memory (each about 8 bytes per message of its folder).
KEPT_ORDERS = 16

#: Reply and forward prefixes left out when sorting by subject (RFC 5256 §2.1 in spirit;
#: also the German, Nordic and Greek ones mail clients write).
_PREFIX = re.compile(r"^(?:\s*(?:re|fwd?|aw|wg|sv|vs|απ|σχετ|πρθ)\s*(?:\[\d+\])?\s*:)+\s*")
#: ``"Name" <address>``, ``Name <address>`` and a bare address, the first of a field.
_NAME_ADDR = re.compile(
    r'\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<plain>[^"<>,;:@()]*?))\s*<(?P<address>[^<>"]*)>'
)
_BARE = re.compile(r'\s*([^\s<>,;:"()]+@[^\s<>,;:"()]+)\s*(?:,|$)')
_QUOTED_PAIR = re.compile(r"\\(.)")
#: Quotes and angle brackets before a sender's name or address.
_LEAD = " \"'<"


def subject_key(value: str) -> str:
    """A lower-cased subject without its ``Re:``/``Fwd:`` prefixes."""
    if ":" in value[:12]:
        return _PREFIX.sub("", value)
    return value.lstrip()


def sender_key(value: str) -> str:
    """A lower-cased From (or To) field without leading quotes and brackets."""
    return value.lstrip(_LEAD)


def first_address(field: str) -> tuple[str, str]:
    """The display name and address of the first mailbox of a decoded address field
    (RFC 5322 §3.4): the common shapes by a pattern, the rest by ``email.utils``."""
    found = _NAME_ADDR.match(field)
    if found:
        quoted, plain, address = found.group("quoted", "plain", "address")
        name = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else plain.strip()
        return name, address.strip()
    found = _BARE.match(field)
    if found:
        return "", found.group(1)
    for name, address in getaddresses([field.replace("\n", ", ")]):
        if name or address:
            return name, address
    return "", ""


@attrs.frozen
class Row:
    """One message of a list page."""

    folder: str
    uid: int
    #: The sender's display name (or address); the first recipient's in Sent and Drafts.
    who: str
    address: str
    subject: str
    date: datetime.datetime
    size: int
    unread: bool
    flagged: bool
    answered: bool
    attachment: bool


def has_attachment(part: BodyPart) -> bool:
    """Whether a body structure holds a part a reader would call an attachment: marked
    ``attachment`` (RFC 2183), named, or an enclosed message."""
    if part.maintype == "multipart":
        return any(has_attachment(child) for child in part.children)
    if part.maintype == "message" and part.subtype == "rfc822":
        return True
    if part.disposition is not None:
        if part.disposition.kind == "attachment":
            return True
        if any(name == "filename" for name, _ in part.disposition.params):
            return part.maintype != "image"  # an inline picture of an HTML mail
    return part.maintype not in ("text", "image") and any(n == "name" for n, _ in part.params)


def row_of(folder: str, message: IStoredMessage, recipients: bool = False) -> Row:
    """The row of a stored message, from its summary (the store's cache)."""
    summary = message.summary()
    headers = summary.headers
    field = headers.get("to" if recipients else "from", "")
    name, address = first_address(field)
    try:
        attachment = has_attachment(summary.body)
    except (ValueError, TypeError, AttributeError):  # a damaged cache record
        attachment = False
    flags = message.flags
    return Row(
        folder=folder,
        uid=message.uid,
        who=name or address or field,
        address=address,
        subject=headers.get("subject", "").replace("\n", " "),
        date=datetime.datetime.fromtimestamp(message.internal_date, datetime.UTC),
        size=message.size,
        unread="\\Seen" not in flags,
        flagged="\\Flagged" in flags,
        answered="\\Answered" in flags,
        attachment=attachment,
    )


def rows_of(folder: IFolder, name: str, uids: Iterable[int], recipients: bool = False) -> list[Row]:
    """The rows of ``uids`` (in that order); messages gone meanwhile are left out."""
    rows = []
    for uid in uids:
        try:
            rows.append(row_of(name, folder.message(uid), recipients))
        except KeyError:
            continue
    return rows


def sort_order(folder: IFolder, key: str, recipients: bool = False) -> list[int]:
    """Every UID of ``folder`` ascending by ``key`` (one of :data:`SORTS`), equal keys by
    UID.  ``recipients``: "from" sorts by the first recipient (Sent, Drafts)."""
    if key == "date":
        return list(folder.uids_ordered("date"))
    if key == "size":
        return list(folder.uids_ordered("size"))
    values: Mapping[int, str] = folder.header_values(
        "subject" if key == "subject" else ("to" if recipients else "from")
    )
    normal: Callable[[str], str] = subject_key if key == "subject" else sender_key
    get = values.get
    uids = folder.uids()
    keys = [normal(get(uid, "")) for uid in uids]
    # A stable sort of positions keyed by the list's __getitem__: equal keys stay in UID
    # order, and no (key, uid) pair is built per message.
    return [uids[i] for i in sorted(range(len(uids)), key=keys.__getitem__)]


class Orders:
    """Sorted UID lists of recently listed folders (least recently used go first)."""

    def __init__(self, most: int = KEPT_ORDERS) -> None:
        self.most = most
        self._kept: OrderedDict[tuple[object, ...], list[int]] = OrderedDict()

    def order(self, owner: str, folder: IFolder, key: str, recipients: bool = False) -> list[int]:
        """``folder``'s UIDs sorted by ``key``, ascending (see :func:`sort_order`); the
        caller must not change the list."""
        ident = (
            owner,
            folder.name,
            folder.uidvalidity,
            folder.uidnext,
            len(folder.uids()),
            key,
            recipients,
        )
        found = self._kept.get(ident)
        if found is None:
            found = sort_order(folder, key, recipients)
            self._kept[ident] = found
            if len(self._kept) > self.most:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(ident)
        return found


@attrs.frozen
class Page:
    """One page of an ordered list of UIDs."""

    uids: list[int]
    #: 1-based number of this page and how many there are (at least 1).
    number: int
    pages: int
    total: int


def page_of(
    order: Sequence[int], descending: bool, number: int, within: Collection[int] | None = None
) -> Page:
    """Page ``number`` (clamped to the pages there are) of ``order``, read backwards when
    ``descending``; ``within``: only these UIDs (a search's hits)."""
    if within is not None:
        order = [uid for uid in order if uid in within]
    total = len(order)
    pages = max(1, -(-total // PAGE_SIZE))
    number = min(max(1, number), pages)
    start = (number - 1) * PAGE_SIZE
    if descending:
        hi = total - start
        uids = list(reversed(order[max(0, hi - PAGE_SIZE) : hi]))
    else:
        uids = list(order[start : start + PAGE_SIZE])
    return Page(uids, number, pages, total)


def short_date(when: datetime.datetime, lang: str, now: datetime.datetime) -> str:
    """A list's date in the reader's language and the server's time zone: the time for
    today, day and month this year, else the short date."""
    local = when.astimezone()
    today = now.astimezone()
    if local.date() == today.date():
        return str(dates.format_time(local, "short", locale=lang))
    if local.year == today.year:
        return str(dates.format_skeleton("MMMd", local, locale=lang))
    return str(dates.format_date(local, "short", locale=lang))


def long_date(when: datetime.datetime, lang: str) -> str:
    """The full date and time (a tooltip) in the reader's language."""
    return str(dates.format_datetime(when.astimezone(), "medium", locale=lang))


def human_size(size: int, lang: str) -> str:
    """A size as a reader reads it (kB, MB), with the language's decimal sign."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{format_decimal(round(size / 1024), locale=lang)} kB"
    return f"{format_decimal(round(size / 1024 / 1024, 1), locale=lang)} MB"
