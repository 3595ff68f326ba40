"""Search on the message list (issue 16 point 6): by sender, recipient, subject, body text
and a range of dates, through the store's own search.

Header fields are looked up in the store's search index (:meth:`IFolder.search_headers`,
decoded, case-insensitive as RFC 3501 §6.4.4 asks), dates in its date index
(:meth:`IFolder.uids_dated`), and only the messages still left are read for body text,
in the store's worker threads (:meth:`IFolder.filter_contents`), never on the reactor.  The
body is matched against the text a reader sees: transfer encodings undone, charsets decoded,
HTML tags left out (:func:`ourmail.web.messageview.build_view`).
"""

from __future__ import annotations

import datetime
import html
import re
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet

import attrs
from twisted.internet.defer import Deferred, succeed

from ourmail.interfaces import IFolder
from ourmail.mime.structure import Buffer
from ourmail.web.messageview import build_view

#: The longest search term (characters) a field takes.
MAX_TERM = 200
#: The query parameters of a search, in the order of the form.
FIELDS = ("from", "to", "subject", "text", "since", "before")
#: Most messages one search reads for body text (the other fields and dates narrow first).
MAX_BODY_SCAN = 20_000
#: Earliest and latest year a date of the form may name.
YEARS = (1970, 9999)

_TAGS = re.compile(r"<[^>]*>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadQuery(ValueError):
    """A search the list cannot run; the message (already translated) says why."""


class TooBroad(Exception):
    """A body-text search would read more than :data:`MAX_BODY_SCAN` messages."""


@attrs.frozen
class Query:
    """One search: each term a lower-cased substring (empty: any), dates a range of days
    (both included), ``everywhere``: in every folder, not only the open one."""

    sender: str = ""
    recipient: str = ""
    subject: str = ""
    text: str = ""
    since: datetime.date | None = None
    before: datetime.date | None = None
    everywhere: bool = False

    @property
    def active(self) -> bool:
        """Whether anything is asked for."""
        terms = (self.sender, self.recipient, self.subject, self.text)
        return any(terms) or self.since is not None or self.before is not None

    def params(self) -> dict[str, str]:
        """The query as the list page's query parameters (for its links)."""
        found = {
            "from": self.sender,
            "to": self.recipient,
            "subject": self.subject,
            "text": self.text,
            "since": self.since.isoformat() if self.since else "",
            "before": self.before.isoformat() if self.before else "",
            "all": "1" if self.everywhere else "",
        }
        return {k: v for k, v in found.items() if v}


def parse_query(field: Callable[[str], str | None], _: Callable[[str], str]) -> Query:
    """The search of a list page's query parameters (``field(name)``: the value or None);
    :class:`BadQuery` for a term that is too long or not text, or dates that are not dates
    or are the wrong way round.  ``_`` translates the reasons."""
    terms = {}
    for name in ("from", "to", "subject", "text"):
        value = field(name)
        if value is None:
            continue
        if len(value) > MAX_TERM:
            raise BadQuery(_("A search term can be at most 200 characters long."))
        terms[name] = " ".join(_CONTROL.sub(" ", value).split()).lower()
    days = {}
    for name in ("since", "before"):
        value = (field(name) or "").strip()
        if not value:
            continue
        try:
            day = datetime.date.fromisoformat(value[:10]) if len(value) == 10 else None
        except ValueError:
            day = None
        if day is None or not YEARS[0] <= day.year <= YEARS[1]:
            raise BadQuery(_("Enter dates as year-month-day, for example 2024-03-31."))
        days[name] = day
    if "since" in days and "before" in days and days["since"] > days["before"]:
        raise BadQuery(_("The first date of the search comes after the last one."))
    return Query(
        sender=terms.get("from", ""),
        recipient=terms.get("to", ""),
        subject=terms.get("subject", ""),
        text=terms.get("text", ""),
        since=days.get("since"),
        before=days.get("before"),
        everywhere=field("all") == "1",
    )


def local_midnight(day: datetime.date) -> float:
    """The POSIX time of ``day``'s start in the server's time zone (the list's dates)."""
    return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))


@attrs.frozen
class BodyText:
    """A body-text test for :meth:`IFolder.filter_contents`: pure, so the store may run it
    in worker threads."""

    needle: str

    def __call__(self, data: Buffer) -> bool:
        view = build_view(data)
        if view.raw is not None:
            return self.needle in view.raw.casefold()
        for body in view.bodies:
            text = (
                body.text if body.html is None else html.unescape(_TAGS.sub(" ", body.html.source))
            )
            if self.needle in " ".join(text.split()).casefold():
                return True
        return False


def search(folder: IFolder, query: Query) -> Deferred[set[int]]:
    """The UIDs of ``folder`` that match ``query``: the indexed terms first, narrowing, then
    the body text of what is left; :class:`TooBroad` when that is too much to read."""
    found: set[int] | None = None

    def narrow(uids: AbstractSet[int]) -> None:
        nonlocal found
        found = set(uids) if found is None else found & set(uids)

    if query.sender:
        narrow(folder.search_headers("from", query.sender))
    if query.subject:
        narrow(folder.search_headers("subject", query.subject))
    if query.recipient:
        narrow(
            folder.search_headers("to", query.recipient)
            | folder.search_headers("cc", query.recipient)
            | folder.search_headers("bcc", query.recipient)
        )
    if query.since is not None or query.before is not None:
        start = None if query.since is None else local_midnight(query.since)
        end = None
        if query.before is not None:
            end = local_midnight(query.before + datetime.timedelta(days=1))
        narrow(folder.uids_dated(start, end))
    if not query.text:
        return succeed(set(folder.uids()) if found is None else found)
    candidates = sorted(folder.uids() if found is None else found)
    if len(candidates) > MAX_BODY_SCAN:
        raise TooBroad(len(candidates))
    return folder.filter_contents(candidates, BodyText(query.text.casefold()))
