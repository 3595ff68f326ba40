"""Whom each user's out-of-office reply went to, and when: one SQLite file,
``<data>/vacation/replies.sqlite``, shared by every process of the server (the MX workers).

* A reply is *claimed* before it is queued, in one ``BEGIN IMMEDIATE`` transaction, so two
  processes delivering two messages of one sender at once send one reply (RFC 5230 §4.1: at
  most one per sender in ``:days``).  A reply that could not be queued is forgotten again.
* The key is (user, sender, handle), the handle a hash of the reply's subject and text: a
  user who changes their reply has it sent again (RFC 5230 §4.2).
* At most ``max_per_day`` replies per user in any 24 hours: a flood of forged senders cannot
  turn one user's absence into a flood of backscatter.
* Bounded: entries older than the longest period (:data:`~ourmail.vacation.settings.MAX_DAYS`)
  are deleted every ten minutes, and the oldest beyond ``max_entries`` with them.

Every method blocks: call it from a thread, never the reactor (``sqlitefile``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ourmail.filters import sqlitefile
from ourmail.vacation.settings import MAX_DAYS

DAY = 86400.0
#: Expired entries are deleted at most this often (seconds), by whichever process sees it due.
EXPIRE_EVERY = 600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    user TEXT NOT NULL, sender TEXT NOT NULL, handle TEXT NOT NULL, sent REAL NOT NULL,
    PRIMARY KEY (user, sender, handle));
CREATE INDEX IF NOT EXISTS replies_age ON replies (sent);
CREATE INDEX IF NOT EXISTS replies_user ON replies (user, sent);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""


class ReplyRecord:
    """The record of replies sent (see the module docstring)."""

    def __init__(self, path: Path, max_entries: int = 1_000_000, max_per_day: int = 1000) -> None:
        self.path = path
        self.max_entries = max_entries
        self.max_per_day = max_per_day
        self._connections = sqlitefile.PerThread(path, SCHEMA)

    def claim(self, user: str, sender: str, handle: str, days: int, now: float) -> str | None:
        """Record a reply from ``user`` to ``sender`` about to be sent; None if it may go,
        else why not (answered within ``days`` days, or the user's daily limit reached)."""
        db = self._connections.get()
        db.execute("BEGIN IMMEDIATE")
        try:
            why = self._claim(db, user, sender, handle, days, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return why

    def _claim(
        self, db: sqlite3.Connection, user: str, sender: str, handle: str, days: int, now: float
    ) -> str | None:
        key = (user, sender, handle)
        row = db.execute(
            "SELECT sent FROM replies WHERE user = ? AND sender = ? AND handle = ?", key
        ).fetchone()
        # Claims for two messages may run in either order (worker threads), so one made "later"
        # than ``now`` counts too; only one more than a day ahead (a clock set back) does not.
        if row is not None and now - days * DAY < row[0] <= now + DAY:
            return "answered already"
        (count,) = db.execute(
            "SELECT count(*) FROM replies WHERE user = ? AND sent > ?", (user, now - DAY)
        ).fetchone()
        if count >= self.max_per_day:
            return "daily limit reached"
        db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)", (*key, now))
        last = db.execute("SELECT value FROM meta WHERE key = 'expired'").fetchone()
        if last is None or not 0 <= now - last[0] < EXPIRE_EVERY:
            self._expire(db, now)
        return None

    def forget(self, user: str, sender: str, handle: str) -> None:
        """Undo a claim whose reply could not be queued."""
        db = self._connections.get()
        db.execute(
            "DELETE FROM replies WHERE user = ? AND sender = ? AND handle = ?",
            (user, sender, handle),
        )

    def _expire(self, db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM replies WHERE sent < ?", (now - MAX_DAYS * DAY,))
        db.execute(
            "DELETE FROM replies WHERE rowid IN (SELECT rowid FROM replies"
            " ORDER BY sent DESC LIMIT -1 OFFSET ?)",
            (self.max_entries,),
        )
        db.execute("INSERT OR REPLACE INTO meta VALUES ('expired', ?)", (now,))

    def count(self) -> int:
        """Entries in the record (tests, the admin)."""
        db = self._connections.get()
        return int(db.execute("SELECT count(*) FROM replies").fetchone()[0])
