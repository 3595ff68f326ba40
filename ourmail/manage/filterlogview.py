"""The filter log as the admin console reads it (:class:`~ourmail.interfaces.IFilterLogReader`):
the entries :class:`~ourmail.filters.filterlog.FilterLog` wrote to ``<data>/filters/log.sqlite``
(the file ``ourmail log filter`` reads), newest first, a page at a time, in a worker thread.

A page walks the ``events_at`` index backwards and stops after one entry more than it shows
(so it knows whether older ones follow): no count over millions of rows per request.  A domain
admin's page keeps the entries whose recipient ends in ``@`` and one of their domains; entries
without a recipient (refusals at connect and MAIL) are shown to full admins only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.filters import sqlitefile
from ourmail.interfaces import FilterEvent, FilterLogPage, IFilterLogReader

_SELECT = (
    "SELECT at, action, stage, check_name, reason, client, recipient, sender, message_id"
    " FROM events"
)


def query(
    domains: Sequence[str] | None, action: str, check: str, address: str
) -> tuple[str, list[Any]]:
    """The SQL of a page's conditions, and its parameters (every value a parameter)."""
    conditions: list[str] = []
    params: list[Any] = []
    if domains is not None:
        ends = [f"@{d.lower()}" for d in domains]
        conditions.append(
            "(" + (" OR ".join("substr(recipient, -?) = ?" for _ in ends) or "0") + ")"
        )
        for end in ends:
            params += [len(end), end]
    if action:
        conditions.append("action = ?")
        params.append(action)
    if check:
        # A Junk filing names every check that asked, comma-separated.
        conditions.append("instr(',' || replace(check_name, ' ', '') || ',', ?) > 0")
        params.append(f",{check},")
    if address:
        conditions.append("(instr(recipient, ?) > 0 OR instr(lower(sender), ?) > 0)")
        params += [address.lower(), address.lower()]
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    return _SELECT + where + " ORDER BY at DESC, id DESC LIMIT ? OFFSET ?", params


@implementer(IFilterLogReader)
class FilterLogReader:
    """:class:`IFilterLogReader` over the filter log's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def page(
        self,
        domains: Sequence[str] | None,
        action: str,
        check: str,
        address: str,
        offset: int,
        limit: int,
    ) -> Deferred[FilterLogPage]:
        sql, params = query(domains, action, check, address)

        def read() -> FilterLogPage:
            if not self.path.exists():
                return FilterLogPage((), offset, False)  # nothing recorded yet
            with sqlitefile.connection(self.path, "NORMAL") as db:
                found = db.execute(sql, [*params, limit + 1, offset]).fetchall()
            events = tuple(FilterEvent(*row) for row in found[:limit])
            return FilterLogPage(events, offset, len(found) > limit)

        return deferToThread(read)
