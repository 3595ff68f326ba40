"""The filter log as the admin console reads it (:class:`~ourmail.interfaces.IFilterLogReader`):
the entries :class:`~ourmail.filters.filterlog.FilterLog` wrote to ``<data>/filters/log.sqlite``
(the file ``ourmail log filter`` reads), newest first, a page at a time, in a worker thread
of the console's own small pool (:data:`POOL_SIZE`), not the reactor's pool that mail
enqueues and store writes share.

A page walks the ``events_at`` index backwards and stops after one entry more than it shows
(so it knows whether older ones follow): no count over millions of rows per request.  A domain
admin's page keeps the entries whose recipient ends in ``@`` and one of their domains; entries
without a recipient (refusals at connect and MAIL) are shown to full admins only.  A search
that must scan many rows (a rare domain, a text) is stopped after :data:`QUERY_SECONDS`, and
the page says so.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ourmail.filters import sqlitefile
from ourmail.interfaces import FilterEvent, FilterLogPage, IFilterLogReader

#: Longest one page's query may run; then it is stopped and the page says so.
QUERY_SECONDS = 5.0
#: Threads of the console's own pool for filter log reads.
POOL_SIZE = 2
#: SQLite virtual machine steps between two looks at the clock.
_STEPS = 10_000

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

    def __init__(self, path: Path, reactor: Any = None) -> None:
        self.path = path
        if reactor is None:
            from twisted.internet import reactor as running

            reactor = running
        self._reactor = reactor
        self._pool: ThreadPool | None = None

    def _threads(self) -> ThreadPool:
        """The console reads' own threads: made and started at first use, stopped at
        shutdown."""
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=POOL_SIZE, name="ourmail-console")
            self._pool.start()
            self._reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

    def page_now(
        self,
        domains: Sequence[str] | None,
        action: str,
        check: str,
        address: str,
        offset: int,
        limit: int,
    ) -> FilterLogPage:
        """:meth:`page`, blocking (a worker thread's part)."""
        if not self.path.exists():
            return FilterLogPage((), offset, False)  # nothing recorded yet
        sql, params = query(domains, action, check, address)
        deadline = time.monotonic() + QUERY_SECONDS
        with sqlitefile.connection(self.path, "NORMAL") as db:
            db.set_progress_handler(lambda: time.monotonic() > deadline, _STEPS)
            try:
                found = db.execute(sql, [*params, limit + 1, offset]).fetchall()
            except sqlite3.OperationalError as e:
                if "interrupt" not in str(e):
                    raise
                return FilterLogPage((), offset, False, stopped=True)
        events = tuple(FilterEvent(*row) for row in found[:limit])
        return FilterLogPage(events, offset, len(found) > limit)

    def page(
        self,
        domains: Sequence[str] | None,
        action: str,
        check: str,
        address: str,
        offset: int,
        limit: int,
    ) -> Deferred[FilterLogPage]:
        return deferToThreadPool(
            self._reactor,
            self._threads(),
            self.page_now,
            domains,
            action,
            check,
            address,
            offset,
            limit,
        )
