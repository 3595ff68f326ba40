"""The lists' state in one SQLite file, ``<data>/lists/lists.sqlite``: the lists and their
settings, the subscriptions, pending confirmations, held posts and the request counts of the
rate limits.  Every method blocks: call it from a thread, never the reactor.

WAL with ``synchronous = FULL``: a subscription confirmed or a post held is on disk when the
call returns.  The messages themselves (held posts) are files beside it (``lists/spool.py``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from ourmail.filters import sqlitefile
from ourmail.lists.model import Archive, Delivery, ListSettings, Member, PostPolicy, ReplyTo

SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    address TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    list TEXT NOT NULL,
    address TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    delivery TEXT NOT NULL DEFAULT 'each',
    disabled_by TEXT NOT NULL DEFAULT '',
    bounce_score REAL NOT NULL DEFAULT 0,
    last_bounce REAL NOT NULL DEFAULT 0,
    subscribed REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (list, address)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    list TEXT NOT NULL,
    address TEXT NOT NULL,
    action TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires);
CREATE TABLE IF NOT EXISTS held (
    list TEXT NOT NULL,
    id TEXT NOT NULL,
    sender TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL,
    held REAL NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (list, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_key ON requests (key, at);
"""


class ListExists(Exception):
    """A list (or a user, alias or group) has that address already."""


class NoSuchList(Exception):
    """No list has that address."""


@attrs.frozen
class Token:
    """A pending confirmation: ``action`` (``subscribe``, ``unsubscribe``, ``approve``…) of
    ``address`` on ``list``, with ``data`` the action needs (a held post's id)."""

    list: str
    address: str
    action: str
    data: str
    created: float
    expires: float


@attrs.frozen
class Held:
    """A post held for moderation; its message is the spool's ``held/<list>/<id>``."""

    list: str
    id: str
    sender: str
    subject: str
    reason: str
    size: int
    held: float
    expires: float


def settings_to_json(settings: ListSettings) -> str:
    def value(_: Any, __: Any, v: Any) -> Any:
        return v.value if isinstance(v, (PostPolicy, ReplyTo, Archive)) else v

    data = attrs.asdict(settings, value_serializer=value)
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def settings_from_json(raw: str) -> ListSettings:
    data = json.loads(raw)
    known = {f.name for f in attrs.fields(ListSettings)}
    data = {k: v for k, v in data.items() if k in known}  # settings of a newer version
    for key in ("owners", "moderators", "posters"):
        data[key] = tuple(data.get(key, ()))
    data["post_policy"] = PostPolicy(data.get("post_policy", "members"))
    data["reply_to"] = ReplyTo(data.get("reply_to", "poster"))
    data["archive"] = Archive(data.get("archive", "private"))
    return ListSettings(**data)


def _member(row: Sequence[Any]) -> Member:
    address, name, delivery, disabled_by, score, last, subscribed = row
    return Member(address, name, Delivery(delivery), disabled_by, score, last, subscribed)


MEMBERS = (
    "SELECT address, name, delivery, disabled_by, bounce_score, last_bounce, subscribed"
    " FROM members WHERE list = ?"
)


class ListDB:
    """The lists' SQLite file; one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connections = sqlitefile.PerThread(path, SCHEMA, synchronous="FULL")

    def close(self) -> None:
        """Close every thread's connection, each once the work under way on it ends."""
        self._connections.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._connections.using() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._connections.using() as db:
            return db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._connections.using() as db:
            return db.execute(sql, args).fetchone()

    def _change(self, sql: str, args: Sequence[Any] = ()) -> int:
        """``sql`` (one statement, autocommit); how many rows it changed."""
        with self._connections.using() as db:
            return int(db.execute(sql, args).rowcount)

    # -- lists ------------------------------------------------------------------------------

    def lists(self) -> list[ListSettings]:
        rows = self._rows("SELECT settings FROM lists ORDER BY address")
        return [settings_from_json(r[0]) for r in rows]

    def get(self, address: str) -> ListSettings | None:
        row = self._one("SELECT settings FROM lists WHERE address = ?", (address,))
        return None if row is None else settings_from_json(row[0])

    def create(self, settings: ListSettings, now: float) -> None:
        """Add a list; :class:`ListExists` if there is one at that address."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM lists WHERE address = ?", (settings.address,)).fetchone():
                raise ListExists(settings.address)
            db.execute(
                "INSERT INTO lists (address, settings, created) VALUES (?, ?, ?)",
                (settings.address, settings_to_json(settings), now),
            )

    def update(self, settings: ListSettings) -> None:
        """Replace a list's settings; :class:`NoSuchList` if there is none."""
        changed = self._change(
            "UPDATE lists SET settings = ? WHERE address = ?",
            (settings_to_json(settings), settings.address),
        )
        if changed == 0:
            raise NoSuchList(settings.address)

    def delete(self, address: str) -> None:
        """Remove a list with its members, confirmations and held posts' rows."""
        with self._transaction() as db:
            if db.execute("DELETE FROM lists WHERE address = ?", (address,)).rowcount == 0:
                raise NoSuchList(address)
            db.execute("DELETE FROM members WHERE list = ?", (address,))
            db.execute("DELETE FROM tokens WHERE list = ?", (address,))
            db.execute("DELETE FROM held WHERE list = ?", (address,))

    # -- members ----------------------------------------------------------------------------

    def members(self, list_address: str, delivery: Delivery | None = None) -> list[Member]:
        """The list's subscribers (in address order), or those with ``delivery``."""
        sql = MEMBERS
        args: tuple[Any, ...] = (list_address,)
        if delivery is not None:
            sql += " AND delivery = ?"
            args += (delivery.value,)
        return [_member(r) for r in self._rows(sql + " ORDER BY address", args)]

    def members_page(self, list_address: str, offset: int, limit: int) -> list[Member]:
        """At most ``limit`` of the list's subscribers from the ``offset``-th on, in address
        order (a page of them: the database reads no more)."""
        sql = MEMBERS + " ORDER BY address LIMIT ? OFFSET ?"
        return [_member(r) for r in self._rows(sql, (list_address, limit, offset))]

    def member(self, list_address: str, address: str) -> Member | None:
        row = self._one(MEMBERS + " AND address = ?", (list_address, address))
        return None if row is None else _member(row)

    def count(self, list_address: str) -> int:
        row = self._one("SELECT count(*) FROM members WHERE list = ?", (list_address,))
        return int(row[0])

    def subscribe(self, list_address: str, members: Sequence[Member]) -> int:
        """Add ``members`` (those already subscribed are left as they are); how many were
        new."""
        added = 0
        with self._transaction() as db:
            for m in members:
                added += db.execute(
                    "INSERT OR IGNORE INTO members (list, address, name, delivery, disabled_by,"
                    " bounce_score, last_bounce, subscribed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        list_address,
                        m.address,
                        m.name,
                        m.delivery.value,
                        m.disabled_by,
                        m.bounce_score,
                        m.last_bounce,
                        m.subscribed,
                    ),
                ).rowcount
        return added

    def unsubscribe(self, list_address: str, addresses: Sequence[str]) -> int:
        """Remove subscriptions; how many there were."""
        removed = 0
        with self._transaction() as db:
            for address in addresses:
                removed += db.execute(
                    "DELETE FROM members WHERE list = ? AND address = ?", (list_address, address)
                ).rowcount
        return removed

    def set_member(self, list_address: str, member: Member) -> None:
        """Store a member's delivery, bounce score and name as given."""
        self._change(
            "UPDATE members SET name = ?, delivery = ?, disabled_by = ?, bounce_score = ?,"
            " last_bounce = ? WHERE list = ? AND address = ?",
            (
                member.name,
                member.delivery.value,
                member.disabled_by,
                member.bounce_score,
                member.last_bounce,
                list_address,
                member.address,
            ),
        )

    def record_bounce(
        self, list_address: str, address: str, score: float, when: float, disable: bool
    ) -> None:
        """Store a member's new bounce score and time, and (``disable``) stop its delivery;
        nothing else of the row is written, so a change made since it was read (a new
        delivery mode, a name) stands."""
        with self._transaction() as db:
            db.execute(
                "UPDATE members SET bounce_score = ?, last_bounce = ?"
                " WHERE list = ? AND address = ?",
                (score, when, list_address, address),
            )
            if disable:
                db.execute(
                    "UPDATE members SET delivery = ?, disabled_by = 'bounces'"
                    " WHERE list = ? AND address = ? AND delivery != ?",
                    (Delivery.NONE.value, list_address, address, Delivery.NONE.value),
                )

    def set_delivery(self, list_address: str, address: str, delivery: Delivery) -> bool:
        """Give a member ``delivery`` (each post or the digest) at its own request; a member
        disabled by bounces is re-enabled with a clean score, one disabled by an owner is
        left as it is.  Only these columns are written, so a name or a bounce counted since
        the member was read stands.  Whether the member's row was written."""
        with self._transaction() as db:
            # SQLite evaluates every SET expression on the row as it was (the CASEs see the
            # old disabled_by).
            return bool(
                db.execute(
                    "UPDATE members SET delivery = ?, disabled_by = '',"
                    " bounce_score = CASE WHEN disabled_by = 'bounces' THEN 0.0"
                    " ELSE bounce_score END,"
                    " last_bounce = CASE WHEN disabled_by = 'bounces' THEN 0.0"
                    " ELSE last_bounce END"
                    " WHERE list = ? AND address = ? AND disabled_by != 'owner'",
                    (delivery.value, list_address, address),
                ).rowcount
            )

    # -- confirmations ----------------------------------------------------------------------

    def add_token(self, digest: str, token: Token) -> None:
        """Keep a pending confirmation under ``digest`` (the token's hash, never the token)."""
        self._change(
            "INSERT INTO tokens (hash, list, address, action, data, created, expires)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                digest,
                token.list,
                token.address,
                token.action,
                token.data,
                token.created,
                token.expires,
            ),
        )

    def take_token(self, digest: str, now: float) -> Token | None:
        """The confirmation under ``digest``, removed (a token works once); None when there is
        none or it expired."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT list, address, action, data, created, expires FROM tokens WHERE hash = ?",
                (digest,),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM tokens WHERE hash = ?", (digest,))
        token = Token(*row)
        return token if token.expires > now else None

    def peek_token(self, digest: str, now: float) -> Token | None:
        """The confirmation under ``digest``, kept (for a page that asks before acting)."""
        row = self._one(
            "SELECT list, address, action, data, created, expires FROM tokens WHERE hash = ?",
            (digest,),
        )
        token = None if row is None else Token(*row)
        return token if token is not None and token.expires > now else None

    def pending_tokens(
        self, list_address: str, address: str, action: str, now: float, data: str | None = None
    ) -> int:
        """How many unexpired confirmations of ``action`` wait for ``address`` (with
        ``data``: only those whose data is that)."""
        query = (
            "SELECT count(*) FROM tokens WHERE list = ? AND address = ? AND action = ?"
            " AND expires > ?"
        )
        params: tuple[str | float, ...] = (list_address, address, action, now)
        if data is not None:
            query += " AND data = ?"
            params += (data,)
        row = self._one(query, params)
        return int(row[0])

    def expire_tokens(self, now: float) -> int:
        return self._change("DELETE FROM tokens WHERE expires <= ?", (now,))

    # -- held posts -------------------------------------------------------------------------

    def hold(self, held: Held) -> None:
        self._change(
            "INSERT INTO held (list, id, sender, subject, reason, size, held, expires)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            attrs.astuple(held),
        )

    def held(self, list_address: str | None = None) -> list[Held]:
        """Posts held (for one list, or for all), oldest first."""
        sql = "SELECT list, id, sender, subject, reason, size, held, expires FROM held"
        args: tuple[Any, ...] = ()
        if list_address is not None:
            sql += " WHERE list = ?"
            args = (list_address,)
        return [Held(*r) for r in self._rows(sql + " ORDER BY held", args)]

    def release(self, list_address: str, held_id: str) -> Held | None:
        """Remove a held post's row (approved, rejected or expired); None if it was gone."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT list, id, sender, subject, reason, size, held, expires FROM held"
                " WHERE list = ? AND id = ?",
                (list_address, held_id),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM held WHERE list = ? AND id = ?", (list_address, held_id))
        return Held(*row)

    # -- rate limits ------------------------------------------------------------------------

    def note_request(self, keys: Sequence[str], now: float, window: float) -> list[int]:
        """Count a request under each of ``keys`` (``addr:x@y``, ``ip:192.0.2.1``) and forget
        those older than ``window`` seconds; how many each key has in the window, this one
        included."""
        counts = []
        with self._transaction() as db:
            db.execute("DELETE FROM requests WHERE at < ?", (now - window,))
            for key in keys:
                db.execute("INSERT INTO requests (key, at) VALUES (?, ?)", (key, now))
                row = db.execute("SELECT count(*) FROM requests WHERE key = ?", (key,))
                counts.append(int(row.fetchone()[0]))
        return counts
