"""The vault's embedded search index: ``<data>/vault/index.sqlite``, SQLite with FTS5.

Tables:

* ``messages``: one row per message (``seq`` is the rowid) with what a hit shows, the
  sender as a search key (indexed), the vault time (indexed) and the Message-ID (indexed);
* ``addresses``: (key, role, seq) for the sender (role 1), the recipients of the header and
  the envelope (role 2) and the envelope's other addresses (role 3: its sender, the
  logged-in user), so ``--to`` and ``--address`` are index look-ups;
* ``texts``: FTS5 over subject, body text and attachment names, tokenised by ``unicode61``
  with ``remove_diacritics 2``, merging its segments 8 at a time (``automerge``: the default
  4 made adding a message 3 times dearer at 100,000 messages, for no faster search).
  SQLite removes only Latin diacritics, so the text is also folded here first
  (:func:`fold`: decomposed, combining marks dropped, case-folded), the same way for a
  document and a query: ``καλημερα`` finds ``Καλημέρα``, ``cafe`` ``Café``.

An address key is ``domain \\x01 local part`` (lower-cased), so an exact address is one key
and a whole domain (``@example.org``) is one range of the same index.

Every criterion of a :class:`VaultQuery` must hold.  A query's words become FTS5 terms each
quoted after :func:`fold` has kept only letters and digits, so nothing a user types is read as
FTS5 syntax (``"``, ``*``, ``NEAR(``, ``OR`` are words or separators, never operators).

Counting is bounded: :meth:`SQLiteIndex.search` counts matches only up to ``offset`` +
``COUNT_LIMIT``; a total equal to that bound means "at least that many".

The database is in WAL mode: one writer (the indexer, serialised across processes by
:class:`ourmail.vault.indexer.Indexer`'s lock) and readers in other threads and processes.
Each thread gets its own connection.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import threading
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from zope.interface import implementer

from ourmail.interfaces import IVaultIndex, VaultDocument, VaultHit, VaultQuery
from ourmail.vault.document import message_id

#: Matches are counted only this far past the page's offset (see the module text).
COUNT_LIMIT = 10_000
#: Most words a query's ``words``, ``subject`` or ``attachment`` may hold, and the longest
#: text a criterion may be.
MAX_TERMS = 32
MAX_CRITERION = 1000
#: Page cache of each connection, in KiB (big batches of inserts into big B-trees).
CACHE_KIB = 64 * 1024
#: How long a reader waits for the writer's lock, in milliseconds.
BUSY_TIMEOUT_MS = 30_000

_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_TERM = re.compile(r"[^\W_]+")
_SENDER, _RECIPIENT, _OTHER = 1, 2, 3
_IN_ADDRESS = "seq IN (SELECT seq FROM addresses WHERE key = ? AND role BETWEEN ? AND ?)"
_IN_DOMAIN = (
    "seq IN (SELECT seq FROM addresses WHERE key >= ? AND key < ? AND role BETWEEN ? AND ?)"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    sender TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    message_id TEXT NOT NULL,
    date REAL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender_key);
CREATE INDEX IF NOT EXISTS messages_time ON messages (time);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE TABLE IF NOT EXISTS addresses (
    key TEXT NOT NULL,
    role INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (key, role, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS addresses_seq ON addresses (seq);
CREATE VIRTUAL TABLE IF NOT EXISTS texts USING fts5 (
    subject, body, attachments, tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO texts (texts, rank) VALUES ('automerge', 8);
"""


class IndexError_(Exception):
    """The index cannot be used here (no FTS5 in this SQLite)."""


class QueryError(ValueError):
    """A query the index cannot run (no word to search for, too long): said to the user."""


def fold(text: str) -> str:
    """``text`` as the index compares it: diacritics removed, case-folded (so final sigma,
    ``ß`` and Greek tonos compare as people expect)."""
    stripped = _MARKS.sub("", unicodedata.normalize("NFD", text.casefold()))
    return unicodedata.normalize("NFC", stripped)


def terms(text: str, what: str) -> list[str]:
    """The searchable words of a criterion (QueryError if there are none or too many)."""
    if len(text) > MAX_CRITERION:
        raise QueryError(f"{what} is too long (at most {MAX_CRITERION} characters)")
    found = _TERM.findall(fold(text))
    if not found:
        raise QueryError(f"{what} has no word to search for: {text!r}")
    if len(found) > MAX_TERMS:
        raise QueryError(f"{what} has too many words (at most {MAX_TERMS})")
    return found


def address_key(address: str) -> str:
    """The index key of an address: ``domain \\x01 local`` (see the module text)."""
    local, at, domain = address.strip().strip("<>").lower().rpartition("@")
    return f"{domain}\x01{local}" if at else f"\x01{domain}"


def _address_condition(address: str, what: str) -> tuple[bool, list[str]]:
    """Whether ``address`` is a whole ``@domain``, and the key, or the key range, to look
    up."""
    value = address.strip().strip("<>").lower()
    if not value or len(value) > MAX_CRITERION or any(c.isspace() for c in value):
        raise QueryError(f"{what} is not an address or @domain: {address!r}")
    if value.startswith("@"):
        domain = value[1:]
        if not domain or "@" in domain:
            raise QueryError(f"{what} is not an address or @domain: {address!r}")
        return True, [f"{domain}\x01", f"{domain}\x02"]
    return False, [address_key(value)]


def _fts(column: str, words: list[str], phrase: bool = False) -> str:
    if phrase:
        return f'{column} : "{" ".join(words)}"'
    return " AND ".join(f'{column} : "{w}"' for w in words)


def check_fts5(db: sqlite3.Connection) -> None:
    """IndexError_ unless this SQLite has FTS5 (Python's own ``sqlite3`` usually has)."""
    try:
        db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        db.execute("DROP TABLE temp.fts5_probe")
    except sqlite3.OperationalError as e:
        raise IndexError_(
            f"this Python's SQLite ({sqlite3.sqlite_version}) has no FTS5, which the vault's "
            f"search index needs: use a Python built with FTS5 ({e})"
        ) from None


def _write(method: Callable[..., None]) -> Callable[..., None]:
    """``method`` as one write transaction, one writer thread at a time."""

    @functools.wraps(method)
    def write(self: SQLiteIndex, *args: object) -> None:
        with self._writing:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                method(self, *args)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    return write


@implementer(IVaultIndex)
class SQLiteIndex:
    """:class:`IVaultIndex` in one SQLite file (see the module text).  Blocking: call it in
    a thread.  Safe to share between threads (a connection per thread)."""

    #: See :attr:`IVaultIndex.count_limit`.
    count_limit = COUNT_LIMIT

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._writing = threading.Lock()
        #: Every thread's connection, so that :meth:`close` closes them all.
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        db = self._db()
        check_fts5(db)
        with db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Used by its own thread only; closed from whichever thread calls close().
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            with self._opened_lock:
                self._opened.append(db)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            self._local.db = db
        return db

    def close(self) -> None:
        """Close every thread's connection (the server stops); a thread that searches
        afterwards opens a new one."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()
        self._local = threading.local()

    @_write
    def add(self, documents: Sequence[VaultDocument]) -> None:
        db = self._db()
        last = self._last(db)
        again = [d.seq for d in documents if d.seq <= last]
        if again:
            self._delete(db, again)
        db.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    d.seq,
                    d.time,
                    d.sender,
                    address_key(d.sender),
                    json.dumps(d.recipients, ensure_ascii=False),
                    d.subject,
                    d.message_id,
                    d.date,
                    d.size,
                )
                for d in documents
            ),
        )
        db.executemany(
            "INSERT OR IGNORE INTO addresses VALUES (?, ?, ?)",
            (row for d in documents for row in _address_rows(d)),
        )
        db.executemany(
            "INSERT INTO texts (rowid, subject, body, attachments) VALUES (?, ?, ?, ?)",
            (
                (d.seq, fold(d.subject), fold(d.text), fold(" ; ".join(d.attachments)))
                for d in documents
            ),
        )
        if documents:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)",
                (max(last, *(d.seq for d in documents)),),
            )

    @_write
    def remove(self, seqs: Sequence[int]) -> None:
        self._delete(self._db(), seqs)

    @staticmethod
    def _delete(db: sqlite3.Connection, seqs: Sequence[int]) -> None:
        rows = [(s,) for s in seqs]
        db.executemany("DELETE FROM messages WHERE seq = ?", rows)
        db.executemany("DELETE FROM addresses WHERE seq = ?", rows)
        db.executemany("DELETE FROM texts WHERE rowid = ?", rows)

    @staticmethod
    def _last(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE name = 'last_seq'").fetchone()
        return int(row[0]) if row else 0

    def last_seq(self) -> int:
        return self._last(self._db())

    def reset(self) -> None:
        """Forget everything, and give the file's space back (``VACUUM``: quick once the
        tables are gone)."""
        self._drop()
        with self._writing:
            self._db().execute("VACUUM")

    @_write
    def _drop(self) -> None:
        db = self._db()
        db.execute("DROP TABLE texts")
        db.execute("DROP TABLE addresses")
        db.execute("DROP TABLE messages")
        db.execute("DELETE FROM meta")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)

    def count(self) -> int:
        """How many messages are indexed."""
        return int(self._db().execute("SELECT count(*) FROM messages").fetchone()[0])

    def search(self, query: VaultQuery, offset: int, limit: int) -> tuple[int, list[VaultHit]]:
        where, args = _where(query)
        db = self._db()
        bound = offset + self.count_limit
        # ``where`` is built from constant fragments only; every value is a parameter.
        total = db.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM messages {where} LIMIT ?)",  # noqa: S608
            (*args, bound),
        ).fetchone()[0]
        rows = db.execute(
            "SELECT seq, time, sender, recipients, subject, size, message_id "  # noqa: S608
            f"FROM messages {where} ORDER BY seq LIMIT ? OFFSET ?",
            (*args, max(0, limit), max(0, offset)),
        ).fetchall()
        return total, [
            VaultHit(seq, time, sender, tuple(json.loads(rcpts)), subject, size, mid)
            for seq, time, sender, rcpts, subject, size, mid in rows
        ]


def _address_rows(d: VaultDocument) -> Iterator[tuple[str, int, int]]:
    env = d.envelope
    if d.sender:
        yield address_key(d.sender), _SENDER, d.seq
    for address in (*d.recipients, *env.recipients, *env.mailboxes):
        yield address_key(address), _RECIPIENT, d.seq
    for address in (env.sender, env.user):
        if address:
            yield address_key(address), _OTHER, d.seq


def _where(query: VaultQuery) -> tuple[str, list[object]]:
    """The WHERE clause on ``messages`` that ``query`` asks for, and its arguments."""
    where: list[str] = []
    args: list[object] = []
    matches: list[str] = []
    if query.words:
        matches.append(_fts("{subject body}", terms(query.words, "words")))
    if query.subject:
        matches.append(_fts("subject", terms(query.subject, "subject")))
    if query.attachment:
        matches.append(_fts("attachments", terms(query.attachment, "attachment"), phrase=True))
    if query.sender:
        domain, values = _address_condition(query.sender, "from")
        where.append("sender_key >= ? AND sender_key < ?" if domain else "sender_key = ?")
        args += values
    for address, roles, what in (
        (query.recipient, (_RECIPIENT, _RECIPIENT), "to"),
        (query.address, (_SENDER, _OTHER), "address"),
    ):
        if address:
            domain, values = _address_condition(address, what)
            where.append(_IN_DOMAIN if domain else _IN_ADDRESS)
            args += [*values, *roles]
    if query.start is not None:
        where.append("time >= ?")
        args.append(query.start)
    if query.end is not None:
        where.append("time < ?")
        args.append(query.end)
    if query.message_id:
        where.append("message_id = ?")
        args.append(message_id(query.message_id))
    if matches:
        where.append("seq IN (SELECT rowid FROM texts WHERE texts MATCH ?)")
        args.append(" AND ".join(matches))
    return ("WHERE " + " AND ".join(where)) if where else "", args
