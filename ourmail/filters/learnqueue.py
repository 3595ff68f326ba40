"""The durable queue of training requests for the spam scanner (learning from Junk moves).

Implementation notes (keep these true when changing this module):

* One SQLite database in WAL mode, ``<data>/filters/learning/learning.sqlite``, written with
  ``synchronous=FULL``: a request is on disk when :meth:`LearnQueue.add` returns.  Every
  method blocks: call them in a thread, never on the reactor.
* A request is keyed by (user, SHA-256 of the message, direction): the same message moved
  into Junk twice is one request, so it is learned once per direction.  Learning one
  direction forgets the other's record (learned or dropped) for that user and message: the
  scanner now holds the new direction, so a later move back teaches it again (spam, ham,
  spam ends on spam).  The last move wins before the scanner is told too: queueing one
  direction cancels the other's pending request (never taught), and a request learned
  while it was being cancelled queues the direction that cancelled it again.  The message
  itself is kept in the row (bounded by ``max_size``), so a later expunge does not lose it;
  it is dropped once learned, and the key is remembered for ``remember_days``.
* The pending requests are bounded by count (:data:`MAX_PENDING`) and by the bytes of their
  messages (``max_bytes``, ``[filters.learning] max_queue_bytes``): a scanner down for long
  must not fill the disk.  What does not fit is not queued (and counted, for the log); a
  move is never refused for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import attrs

from ourmail.filters import sqlitefile

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    user TEXT NOT NULL,
    digest TEXT NOT NULL,
    spam INTEGER NOT NULL,
    message BLOB,
    state TEXT NOT NULL,
    queued REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    done REAL,
    PRIMARY KEY (user, digest, spam)
);
CREATE INDEX IF NOT EXISTS requests_due ON requests (state, next_try);
"""

#: Requests waiting at most (each holds its message, up to ``max_size``): a scanner down for
#: long must not fill the disk.
MAX_PENDING = 20_000
#: The bytes of the messages of waiting requests at most, unless configured.
MAX_PENDING_BYTES = 1_000_000_000

#: The states of a request.
PENDING, LEARNED, DROPPED = "pending", "learned", "dropped"


@attrs.frozen
class Added:
    """What :meth:`LearnQueue.add` did with the messages it was given."""

    #: Queued now (not already queued or learned in this direction).
    new: int
    #: Not queued: the pending requests are at their bound (count or bytes).
    full: int


@attrs.frozen
class Request:
    """One message to teach the scanner."""

    user: str
    digest: str
    spam: bool
    message: bytes
    queued: float
    attempts: int


def digest(message: bytes) -> str:
    """The key of a message's content."""
    return hashlib.sha256(message).hexdigest()


class LearnQueue:
    """The training requests (blocking: call every method from a thread)."""

    def __init__(
        self, path: Path, max_pending: int = MAX_PENDING, max_bytes: int = MAX_PENDING_BYTES
    ) -> None:
        self.path = path
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        sqlitefile.create(path, SCHEMA)

    def _db(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlitefile.connection(self.path, "FULL")

    @staticmethod
    def _pending(db: sqlite3.Connection) -> tuple[int, int]:
        # length() of a BLOB reads the record header only, not the message (SQLite's
        # OPFLAG_LENGTHARG).
        count, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(message)), 0) FROM requests WHERE state = ?",
            (PENDING,),
        ).fetchone()
        return int(count), int(size)

    def has_room(self) -> bool:
        """Whether one more request may be queued (read before reading messages to add)."""
        with self._db() as db:
            count, size = self._pending(db)
        return count < self.max_pending and size < self.max_bytes

    def add(self, user: str, spam: bool, messages: Iterable[bytes], now: float) -> Added:
        """Queue ``messages`` in one transaction (durable on return).  A message already
        queued or learned in this direction for ``user`` is not queued again; its pending
        request in the other direction is cancelled (the person changed their mind before
        the scanner was told); one that would take the pending requests past
        ``max_pending`` or ``max_bytes`` is not queued (counted as ``full``)."""
        new = full = 0
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            count, size = self._pending(db)
            for message in messages:
                key = (user, digest(message), int(spam))
                opposite = (user, key[1], int(not spam), PENDING)
                cancelled = db.execute(
                    "SELECT LENGTH(message) FROM requests"
                    " WHERE user = ? AND digest = ? AND spam = ? AND state = ?",
                    opposite,
                ).fetchone()
                if cancelled is not None:
                    db.execute(
                        "DELETE FROM requests"
                        " WHERE user = ? AND digest = ? AND spam = ? AND state = ?",
                        opposite,
                    )
                    count -= 1
                    size -= cancelled[0]
                if count + 1 > self.max_pending or size + len(message) > self.max_bytes:
                    known = db.execute(
                        "SELECT 1 FROM requests WHERE user = ? AND digest = ? AND spam = ?", key
                    ).fetchone()
                    full += known is None
                    continue
                before = db.total_changes
                db.execute(
                    "INSERT OR IGNORE INTO requests (user, digest, spam, message, state,"
                    " queued, next_try) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*key, message, PENDING, now, now),
                )
                if db.total_changes > before:
                    new += 1
                    count += 1
                    size += len(message)
            db.execute("COMMIT")
        return Added(new, full)

    def due(self, now: float, limit: int) -> list[Request]:
        """Up to ``limit`` pending requests whose time has come, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT user, digest, spam, message, queued, attempts FROM requests"
                " WHERE state = ? AND next_try <= ? ORDER BY next_try, queued LIMIT ?",
                (PENDING, now, limit),
            ).fetchall()
        return [Request(u, d, bool(s), bytes(m), q, a) for u, d, s, m, q, a in rows]

    def next_due(self) -> float | None:
        """When the next pending request is due, or None when nothing waits."""
        with self._db() as db:
            (at,) = db.execute(
                "SELECT MIN(next_try) FROM requests WHERE state = ?", (PENDING,)
            ).fetchone()
        return None if at is None else float(at)

    def finish(self, request: Request, state: str, now: float) -> None:
        """``request`` was learned (or dropped): forget its message, remember its key.  Once
        learned, the record of the other direction is forgotten (the scanner holds this one
        now), so that moving the message back teaches the scanner again; if ``request`` was
        cancelled meanwhile (moved back while the scanner learned it), the other direction
        is queued again so that the scanner ends on the last move."""
        other = (request.user, request.digest, int(not request.spam))
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(
                "UPDATE requests SET state = ?, message = NULL, done = ?"
                " WHERE user = ? AND digest = ? AND spam = ?",
                (state, now, request.user, request.digest, int(request.spam)),
            )
            if state == LEARNED:
                db.execute(
                    "DELETE FROM requests WHERE user = ? AND digest = ? AND spam = ?"
                    " AND state != ?",
                    (*other, PENDING),
                )
                if cursor.rowcount == 0:
                    db.execute(
                        "INSERT OR IGNORE INTO requests (user, digest, spam, message, state,"
                        " queued, next_try) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*other, request.message, PENDING, now, now),
                    )
            db.execute("COMMIT")

    def retry(self, request: Request, at: float) -> None:
        """``request`` failed: count the attempt and try again at ``at``."""
        with self._db() as db:
            db.execute(
                "UPDATE requests SET attempts = attempts + 1, next_try = ?"
                " WHERE user = ? AND digest = ? AND spam = ?",
                (at, request.user, request.digest, int(request.spam)),
            )

    def prune(self, before: float) -> int:
        """Forget the keys of requests finished before ``before``; how many."""
        with self._db() as db:
            cursor = db.execute(
                "DELETE FROM requests WHERE state != ? AND done < ?", (PENDING, before)
            )
            return cursor.rowcount

    def counts(self) -> dict[str, int]:
        """How many requests are in each state."""
        with self._db() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall()
        return {state: count for state, count in rows}
