"""Each user's spam preferences: thresholds, allow and block lists, and contacts.

Implementation notes (keep these true when changing this module):

* One SQLite database in WAL mode, ``<data>/filters/spam/spam.sqlite``, shared by every
  process of the server (the MX workers, the admin command) and kept across restarts.  The
  blocking calls of :class:`SpamPrefs` run off the reactor thread (:class:`ContactBook` and
  the spam check use the reactor's thread pool), one connection per thread.
* An allow or block entry is an address (``bob@example.org``) or a domain (``@example.org``,
  which also covers its subdomains).  The most specific entry that matches a sender wins;
  between two senders of one message (envelope and ``From:``), block wins.  A sender's
  domain is matched by its :data:`MAX_LABELS` nearest-the-root parents only (an entry for a
  deeper subdomain matches addresses, not domains), so a lookup is bounded.
* :meth:`SpamPrefs.lookup` asks one query per recipient (its thresholds, the list entries
  and contacts that match, with ``IN (...)``), whatever the number of senders.
* Contacts are the addresses a user sent mail to through submission, at most
  :data:`MAX_CONTACTS` per user (the oldest are forgotten first).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import attrs
from twisted.internet import threads
from twisted.internet.defer import Deferred
from zope.interface import implementer

from ourmail.filters import sqlitefile
from ourmail.interfaces import IContactBook

ListKind = Literal["allow", "block"]
#: Contacts kept per user; past this the least recently written-to go.
MAX_CONTACTS = 5000
#: Stored for a reject threshold switched off for a user (above every score).
OFF = math.inf
#: Parent domains of a sender looked up on the lists (``@a.b.example`` … ``@example``).
MAX_LABELS = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS thresholds (
    user TEXT PRIMARY KEY, junk REAL, reject REAL);
CREATE TABLE IF NOT EXISTS lists (
    user TEXT NOT NULL, entry TEXT NOT NULL, kind TEXT NOT NULL,
    PRIMARY KEY (user, entry));
CREATE TABLE IF NOT EXISTS contacts (
    user TEXT NOT NULL, address TEXT NOT NULL, last_sent REAL NOT NULL,
    PRIMARY KEY (user, address));
CREATE INDEX IF NOT EXISTS contacts_age ON contacts (user, last_sent);
"""
#: One user's thresholds, the list entries among a JSON array of candidates, and the
#: contacts among a JSON array of addresses (the ``IN`` lists go as one parameter each).
LOOKUP = """
SELECT 'limits', junk, reject FROM thresholds WHERE user = ?
UNION ALL SELECT 'list', entry, kind FROM lists
    WHERE user = ? AND entry IN (SELECT value FROM json_each(?))
UNION ALL SELECT 'contact', address, NULL FROM contacts
    WHERE user = ? AND address IN (SELECT value FROM json_each(?))
"""


def database_path(state_dir: os.PathLike[str]) -> Path:
    """The database under the filters' state directory (``<data>/filters``)."""
    return Path(state_dir) / "spam" / "spam.sqlite"


def normalise_entry(entry: str) -> str:
    """A list entry in canonical form: ``local@domain`` or ``@domain``, lower-case;
    ValueError for anything else."""
    entry = entry.strip().lower()
    local, at, domain = entry.rpartition("@")
    domain = domain.rstrip(".")
    valid_domain = bool(domain) and "." in domain and all(domain.split("."))
    if not at or not valid_domain or any(c.isspace() for c in entry) or "@" in local:
        raise ValueError(f"not an address or @domain: {entry!r}")
    return f"{local}@{domain}"


def _candidates(sender: str) -> list[str]:
    """List entries that match ``sender``, the most specific first: the address, then
    ``@domain`` and each parent domain."""
    sender = sender.strip().lower()
    _, at, domain = sender.rpartition("@")
    if not at or not domain:
        return []
    labels = domain.rstrip(".").split(".")
    first = max(0, len(labels) - 1 - MAX_LABELS)
    return [sender] + ["@" + ".".join(labels[i:]) for i in range(first, len(labels) - 1)]


@attrs.frozen
class UserPrefs:
    """What one recipient's preferences say of one message."""

    #: The user's own thresholds (None: the domain's or the check's).
    junk: float | None = None
    reject: float | None = None
    #: "allow" or "block" when a sender is on the user's lists.
    listed: ListKind | None = None
    #: An allowed sender is one the user has written to.
    contact: bool = False


class SpamPrefs:
    """The preferences database (blocking: call it from a thread, never the reactor)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connections = sqlitefile.PerThread(path, SCHEMA)

    def _db(self) -> sqlite3.Connection:
        return self._connections.get()

    # -- thresholds --------------------------------------------------------------------------

    def set_thresholds(self, user: str, junk: float | None, reject: float | None) -> None:
        """Set ``user``'s thresholds (None: back to the domain's or the check's default;
        :data:`OFF` for reject: never refuse for this user)."""
        db = self._db()
        if junk is None and reject is None:
            db.execute("DELETE FROM thresholds WHERE user = ?", (user,))
        else:
            db.execute("INSERT OR REPLACE INTO thresholds VALUES (?, ?, ?)", (user, junk, reject))

    def thresholds(self, user: str) -> tuple[float | None, float | None]:
        row = (
            self._db()
            .execute("SELECT junk, reject FROM thresholds WHERE user = ?", (user,))
            .fetchone()
        )
        return (row[0], row[1]) if row else (None, None)

    # -- lists -------------------------------------------------------------------------------

    def add_entry(self, user: str, entry: str, kind: ListKind) -> str:
        """Put ``entry`` on ``user``'s allow or block list (off the other); the stored form."""
        entry = normalise_entry(entry)
        self._db().execute("INSERT OR REPLACE INTO lists VALUES (?, ?, ?)", (user, entry, kind))
        return entry

    def remove_entry(self, user: str, entry: str) -> bool:
        """Take ``entry`` off ``user``'s lists; whether it was on one."""
        cursor = self._db().execute(
            "DELETE FROM lists WHERE user = ? AND entry = ?", (user, normalise_entry(entry))
        )
        return cursor.rowcount > 0

    def entries(self, user: str) -> list[tuple[str, ListKind]]:
        """``user``'s list entries, (entry, kind), sorted."""
        rows = self._db().execute(
            "SELECT entry, kind FROM lists WHERE user = ? ORDER BY kind, entry", (user,)
        )
        return [(str(e), k) for e, k in rows]

    # -- contacts ----------------------------------------------------------------------------

    def add_contacts(self, user: str, addresses: Iterable[str], now: float) -> None:
        """Remember that ``user`` sent mail to ``addresses`` (one transaction)."""
        db = self._db()
        rows = [(user, a.strip().lower(), now) for a in addresses if "@" in a]
        if not rows:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO contacts VALUES (?, ?, ?)", rows)
            db.execute(
                "DELETE FROM contacts WHERE user = ? AND rowid IN (SELECT rowid FROM contacts"
                " WHERE user = ? ORDER BY last_sent DESC LIMIT -1 OFFSET ?)",
                (user, user, MAX_CONTACTS),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def contacts(self, user: str) -> list[str]:
        rows = self._db().execute(
            "SELECT address FROM contacts WHERE user = ? ORDER BY address", (user,)
        )
        return [str(a) for (a,) in rows]

    # -- what the check asks -----------------------------------------------------------------

    def lookup(
        self, users: Sequence[str], senders: Sequence[str], trusted: Sequence[str]
    ) -> dict[str, UserPrefs]:
        """Each user's thresholds and what its lists and contacts say of the message's
        ``senders``; ``trusted``: those of them an authentication check vouched for (only
        they may be allowed or be contacts).  One query per user."""
        db = self._db()
        senders = list(dict.fromkeys(s.strip().lower() for s in senders))
        trusted_set = {t.strip().lower() for t in trusted}
        candidates = {sender: _candidates(sender) for sender in senders}
        entries = list(dict.fromkeys(e for c in candidates.values() for e in c))
        contacts = [s for s in senders if s in trusted_set]
        wanted = (json.dumps(entries), json.dumps(contacts))
        out = {}
        for user in users:
            rows = db.execute(LOOKUP, (user, user, wanted[0], user, wanted[1])).fetchall()
            junk = reject = None
            kinds: dict[str, ListKind] = {}
            contact = False
            for what, first, second in rows:
                if what == "limits":
                    junk, reject = first, second
                elif what == "list":
                    kinds[first] = second
                else:
                    contact = True
            verdicts: list[ListKind] = []
            for sender, matching in candidates.items():
                # The most specific entry that matches this sender decides for it.
                kind = next((kinds[e] for e in matching if e in kinds), None)
                if kind == "block" or (kind == "allow" and sender in trusted_set):
                    verdicts.append(kind)
            listed: ListKind | None = (
                "block" if "block" in verdicts else "allow" if verdicts else None
            )
            out[user] = UserPrefs(junk, reject, listed, contact)
        return out


@implementer(IContactBook)
class ContactBook:
    """Records whom users write to (submission), in the spam preferences database."""

    def __init__(self, prefs: SpamPrefs) -> None:
        self.prefs = prefs

    def sent(self, user: str, recipients: Sequence[str]) -> Deferred[None]:
        return threads.deferToThread(self.prefs.add_contacts, user, list(recipients), time.time())
