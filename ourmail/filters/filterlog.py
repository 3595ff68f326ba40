"""The filter log: what the chain refused or filed into Junk, per recipient, for support
staff (``ourmail log filter USER``, docs/filters.md).

Implementation notes (keep these true when changing this module):

* One SQLite database in WAL mode, ``<data>/filters/log.sqlite``, shared by the main process
  and the MX workers (each writes its own batches; SQLite's busy time-out serialises them).
* :meth:`FilterLog.record` only appends to a list on the reactor thread; one write at a time
  runs in a thread and takes everything queued since the last one, so a burst of refusals is
  a few transactions, not one per event.  What waits is bounded (:data:`MAX_WAITING`; beyond
  it events are counted and dropped with a log line, never memory without end), and what
  waits is written before the reactor shuts down.
* Entries older than ``retention_days`` are pruned, at most once an hour, and never more than
  ``MAX_ENTRIES`` are kept (a flood of refused connections cannot fill the disk).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.filters import sqlitefile
from ourmail.interfaces import FilterEvent, IFilterLog

log = Logger()

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    recipient TEXT,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    stage TEXT NOT NULL,
    check_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    sender TEXT,
    message_id TEXT
);
CREATE INDEX IF NOT EXISTS events_recipient ON events (recipient, at);
CREATE INDEX IF NOT EXISTS events_client ON events (client, at);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
"""

_SELECT = (
    "SELECT at, action, stage, check_name, reason, client, recipient, sender, message_id"
    " FROM events WHERE "
)
BY_RECIPIENT = _SELECT + "recipient = ? AND at >= ? ORDER BY at, id"
BY_CLIENT = _SELECT + "client = ? AND at >= ? ORDER BY at, id"

#: Events waiting to be written, at most.
MAX_WAITING = 50_000
#: Entries kept at most, whatever their age.
MAX_ENTRIES = 5_000_000
#: Seconds between two prunings.
PRUNE_EVERY = 3600.0
#: The longest text kept of one field.
MAX_FIELD = 1000

#: A field's value with its folded continuation lines (RFC 5322 §2.2.3).
_FIELD_VALUE = re.compile(rb"[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")


def message_id(head: bytes) -> str | None:
    """The Message-ID (RFC 5322 §3.6.4) in the header section that ``head`` starts, or None."""
    end = head.find(b"\r\n\r\n")
    section = head if end < 0 else head[: end + 2]
    # A search in C on the lower-cased header: a few microseconds for a common header.
    found = (b"\n" + section.lower()).find(b"\nmessage-id:")
    if found < 0:
        return None
    match = _FIELD_VALUE.match(section, found + len(b"message-id:"))
    assert match is not None  # (the pattern matches the empty string)
    value = b" ".join(match.group(0).split()).decode("utf-8", "replace")
    return value[:MAX_FIELD] or None


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:MAX_FIELD]


class LogDB:
    """The entries (blocking: call every method from a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        sqlitefile.create(path, SCHEMA)

    def _db(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlitefile.connection(self.path, "NORMAL")

    def add(self, events: Sequence[FilterEvent]) -> None:
        """Write ``events`` in one transaction."""
        rows = [
            (
                e.at,
                e.recipient.lower() if e.recipient else None,
                e.client_address,
                e.action,
                e.stage,
                _clip(e.check),
                _clip(e.reason),
                _clip(e.sender),
                _clip(e.message_id),
            )
            for e in events
        ]
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO events (at, recipient, client, action, stage, check_name, reason,"
                " sender, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")

    def prune(self, before: float, keep: int = MAX_ENTRIES) -> int:
        """Delete entries older than ``before``, and the oldest beyond ``keep``; how many."""
        with self._db() as db:
            old = db.execute("DELETE FROM events WHERE at < ?", (before,)).rowcount
            over = db.execute(
                "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (keep,)
            ).rowcount
        return old + over

    def entries(
        self, recipient: str | None = None, client: str | None = None, since: float = 0.0
    ) -> list[FilterEvent]:
        """The entries of ``recipient`` (or from ``client``) since ``since``, oldest first."""
        if recipient is not None:
            query, value = BY_RECIPIENT, recipient.lower()
        elif client is not None:
            query, value = BY_CLIENT, client
        else:
            raise ValueError("name a recipient or a client address")
        with self._db() as db:
            rows = db.execute(query, (value, since)).fetchall()
        return [FilterEvent(*row) for row in rows]


@implementer(IFilterLog)
class FilterLog:
    """Records the chain's events in batches, off the reactor."""

    def __init__(self, db: LogDB, reactor: IReactorCore, retention_days: int = 30) -> None:
        self.db = db
        self.retention = retention_days * 86400.0
        self._waiting: list[FilterEvent] = []
        self._writing: Deferred[None] | None = None
        self._dropped = 0
        self._last_prune = 0.0
        reactor.addSystemEventTrigger("before", "shutdown", self.flush)

    def record(self, events: Sequence[FilterEvent]) -> None:
        room = MAX_WAITING - len(self._waiting)
        if len(events) > room:
            self._dropped += len(events) - room
            events = events[: max(room, 0)]
        self._waiting.extend(events)
        if self._writing is None and self._waiting:
            self._write()

    def _write(self) -> None:
        batch, self._waiting = self._waiting, []
        prune = time.time() - self._last_prune > PRUNE_EVERY
        if prune:
            self._last_prune = time.time()
        d = threads.deferToThread(self._write_batch, batch, prune)

        def failed(failure: Failure) -> None:
            log.failure("could not write {n} filter log entries", failure, n=len(batch))

        d.addErrback(failed)
        d.addBoth(self._written)
        self._writing = d

    def _write_batch(self, batch: list[FilterEvent], prune: bool) -> None:
        self.db.add(batch)
        if prune:
            self.db.prune(time.time() - self.retention)

    def _written(self, _: object) -> None:
        self._writing = None
        if self._dropped:
            log.warn("filter log: {n} entries dropped (writes too slow)", n=self._dropped)
            self._dropped = 0
        if self._waiting:
            self._write()

    def flush(self) -> Deferred[None]:
        """Fires once everything recorded so far is written."""
        if self._writing is None and not self._waiting:
            return succeed(None)
        done: Deferred[None] = Deferred()

        def check() -> None:
            if self._writing is None and not self._waiting:
                done.callback(None)
            elif self._writing is not None:
                self._writing.addBoth(lambda _: check())
            else:
                self._write()
                check()

        check()
        return done
