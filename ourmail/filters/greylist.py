"""Greylisting (RFC 6647) at RCPT: an unknown client is asked to try again later.

Implementation notes (keep these true when changing this module):

* The triplet (RFC 6647 §2.2) is the client's network (/24 for IPv4, /64 for IPv6, so a
  sender's pool of outgoing hosts counts as one), the envelope sender and the recipient,
  both lower-cased.  The first time a triplet is seen it is answered ``450 4.7.1`` (RFC 3463
  X.7.1); a retry at least ``delay`` seconds later, and before ``max_wait``, is accepted and
  the client's network is then allowed for ``allow_for`` seconds whoever it sends for
  (auto-allowing after a successful retry); each accepted message while allowed renews that.
* The null sender is greylisted like any other: bounces come from real MTAs, which retry
  (RFC 5321 §4.5.4.1); exempting ``<>`` would let anyone past by sending with it.
* Exempt: clients in ``skip_networks`` (default loopback) and, with ``skip_spf_pass``
  (default on), clients whose MAIL FROM passed SPF earlier in the chain (``notes["spf"]``):
  the sending domain vouches for the host, which greylisting tries to establish.
* The state is one SQLite database in WAL mode, ``<data>/filters/greylist/greylist.sqlite``,
  shared by every process of the server (the MX workers) and kept across restarts.  It is
  only touched off the reactor thread (the reactor's thread pool, one connection per
  thread), each decision in one ``BEGIN IMMEDIATE`` transaction so two processes seeing the
  same retry agree, with a busy time-out.  Entries past ``max_wait`` (triplets) or
  ``allow_for`` (networks) are deleted every ten minutes, and also after every
  ``max_entries / 10`` new triplets, when the oldest beyond ``max_entries`` go too: the file
  stays within about 1.1 times ``max_entries`` triplets, whatever a flood of new senders does.
"""

from __future__ import annotations

import ipaddress
import math
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import attrs
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.filters import sqlitefile
from ourmail.filters.netlist import IPAddress, IPNetwork, client_ip, in_networks, parse_networks
from ourmail.filters.options import refuse_unknown
from ourmail.interfaces import (
    ACCEPT,
    FilterEnvironment,
    ICheck,
    ICheckFactory,
    MailContext,
    Stage,
    Verdict,
    refuse,
)

log = Logger()

DAY = 86400.0
OPTIONS = {"delay", "max_wait", "allow_for", "skip_networks", "skip_spf_pass", "max_entries"}
#: Expired entries are deleted at most this often (seconds), by whichever process sees it due.
EXPIRE_EVERY = 600.0
#: A network's allowance is renewed when it is older than this (saves a write per message).
RENEW_AFTER = 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS triplets (
    network TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    first_seen REAL NOT NULL, PRIMARY KEY (network, sender, recipient));
CREATE INDEX IF NOT EXISTS triplets_age ON triplets (first_seen);
CREATE TABLE IF NOT EXISTS allowed (network TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""


def network_of(ip: IPAddress) -> str:
    """The client network of a triplet: the /24 of an IPv4 address, the /64 of an IPv6 one."""
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@attrs.frozen
class Decision:
    """What the database says: pass, or wait ``wait`` more seconds."""

    passed: bool
    wait: int = 0
    #: "allowed" (network auto-allowed), "retried" (the retry that passes), "new", "early".
    why: str = ""


class GreylistDB:
    """The greylisting state in SQLite (blocking: call it from a thread, never the reactor).

    One connection per thread and database file; any number of processes may open the same
    file at once."""

    def __init__(
        self,
        path: Path,
        delay: float = 300.0,
        max_wait: float = 2 * DAY,
        allow_for: float = 30 * DAY,
        max_entries: int = 1_000_000,
    ) -> None:
        self.path = path
        self.delay = delay
        self.max_wait = max_wait
        self.allow_for = allow_for
        self.max_entries = max_entries
        self._connections = sqlitefile.PerThread(path, SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    def decide(self, network: str, sender: str, recipient: str, now: float) -> Decision:
        """Record this attempt and say whether it passes (one transaction)."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            decision = self._decide(db, network, sender, recipient, now)
            if decision.why == "new":
                db.execute("INSERT OR IGNORE INTO meta VALUES ('added', 0)")
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'added'")
            self._maybe_expire(db, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return decision

    def _decide(
        self, db: sqlite3.Connection, network: str, sender: str, recipient: str, now: float
    ) -> Decision:
        row = db.execute("SELECT until FROM allowed WHERE network = ?", (network,)).fetchone()
        if row is not None and row[0] > now:
            if row[0] - now < self.allow_for - RENEW_AFTER:
                renewed = (now + self.allow_for, network)
                db.execute("UPDATE allowed SET until = ? WHERE network = ?", renewed)
            return Decision(True, why="allowed")
        key = (network, sender, recipient)
        row = db.execute(
            "SELECT first_seen FROM triplets WHERE network = ? AND sender = ? AND recipient = ?",
            key,
        ).fetchone()
        if row is None or now - row[0] > self.max_wait or row[0] > now:
            db.execute("INSERT OR REPLACE INTO triplets VALUES (?, ?, ?, ?)", (*key, now))
            return Decision(False, math.ceil(self.delay), "new")
        if now - row[0] < self.delay:
            return Decision(False, max(1, math.ceil(self.delay - (now - row[0]))), "early")
        db.execute("DELETE FROM triplets WHERE network = ? AND sender = ? AND recipient = ?", key)
        db.execute("INSERT OR REPLACE INTO allowed VALUES (?, ?)", (network, now + self.allow_for))
        return Decision(True, why="retried")

    def _maybe_expire(self, db: sqlite3.Connection, now: float) -> None:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        recent = "expired" in meta and now - meta["expired"] < EXPIRE_EVERY
        if recent and meta.get("added", 0) < max(1, self.max_entries // 10):
            return
        self.expire(db, now)

    def expire(self, db: sqlite3.Connection, now: float) -> None:
        """Delete what is past its time, and the oldest triplets beyond ``max_entries``."""
        db.execute("DELETE FROM triplets WHERE first_seen < ?", (now - self.max_wait,))
        db.execute("DELETE FROM allowed WHERE until < ?", (now,))
        db.execute(
            "DELETE FROM triplets WHERE rowid IN (SELECT rowid FROM triplets"
            " ORDER BY first_seen DESC LIMIT -1 OFFSET ?)",
            (self.max_entries,),
        )
        db.execute("INSERT OR REPLACE INTO meta VALUES ('expired', ?)", (now,))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('added', 0)")

    def counts(self) -> tuple[int, int]:
        """(triplets, allowed networks) in the database, for tests and the admin."""
        db = self._connection()
        triplets = db.execute("SELECT count(*) FROM triplets").fetchone()[0]
        allowed = db.execute("SELECT count(*) FROM allowed").fetchone()[0]
        return int(triplets), int(allowed)


@implementer(ICheck)
class GreylistCheck:
    """The ``greylist`` check (see the module notes)."""

    name = "greylist"
    stages: tuple[Stage, ...] = ("rcpt",)

    def __init__(
        self,
        db: GreylistDB,
        reactor: object,
        skip_networks: Sequence[IPNetwork] = (),
        skip_spf_pass: bool = True,
    ) -> None:
        self.db = db
        self.timeout = sqlitefile.BUSY_TIMEOUT_MS / 1000 + 5.0
        #: A broken database must not stop the mail: the message is then accepted (logged).
        self.on_error = "accept"
        self.trusted = False
        self.skip_networks = tuple(skip_networks)
        self.skip_spf_pass = skip_spf_pass
        self._reactor = reactor

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        ip = client_ip(context.client_address)
        if ip is None or in_networks(ip, self.skip_networks) or self._spf_passed(context):
            return defer.succeed(ACCEPT)
        network = network_of(ip)
        sender = (context.sender or "").lower()
        recipient = (context.recipient or "").lower()
        clock = cast(IReactorTime, self._reactor)
        reactor = cast(IReactorFromThreads, self._reactor)
        pool = cast(IReactorThreads, self._reactor).getThreadPool()
        d = threads.deferToThreadPool(
            reactor, pool, self.db.decide, network, sender, recipient, clock.seconds()
        )

        def verdict(decision: Decision) -> Verdict:
            if decision.passed:
                if decision.why == "retried":
                    log.info(
                        "greylist: {network} retried for <{sender}> -> <{recipient}>;"
                        " network allowed",
                        network=network,
                        sender=sender,
                        recipient=recipient,
                    )
                return ACCEPT
            log.info(
                "greylist: {network} <{sender}> -> <{recipient}> greylisted ({why})",
                network=network,
                sender=sender,
                recipient=recipient,
                why=decision.why,
            )
            return refuse(450, "4.7.1", f"Greylisted, try again in {decision.wait} seconds")

        return d.addCallback(verdict)

    def _spf_passed(self, context: MailContext) -> bool:
        spf = context.notes.get("spf")
        return self.skip_spf_pass and isinstance(spf, Mapping) and spf.get("result") == "pass"


def _seconds(options: Mapping[str, object], key: str, default: float) -> float:
    value = options.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key!r} must be a number of seconds, 0 or more")
    return float(value)


@implementer(ICheckFactory)
class GreylistFactory:
    """Builds the ``greylist`` check from ``[filters.check.greylist]`` (docs/filters.md)."""

    name = "greylist"

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        refuse_unknown(options, OPTIONS)
        delay = _seconds(options, "delay", 300.0)
        max_wait = _seconds(options, "max_wait", 2 * DAY)
        if max_wait <= delay:
            raise ValueError("'max_wait' must be longer than 'delay'")
        skip_spf = options.get("skip_spf_pass", True)
        if not isinstance(skip_spf, bool):
            raise ValueError("'skip_spf_pass' must be true or false")
        entries = options.get("max_entries", 1_000_000)
        if not isinstance(entries, int) or isinstance(entries, bool) or entries < 1:
            raise ValueError("'max_entries' must be a whole number, 1 or more")
        skip = options.get("skip_networks", ["127.0.0.0/8", "::1/128"])
        db = GreylistDB(
            Path(env.state_dir) / "greylist" / "greylist.sqlite",
            delay=delay,
            max_wait=max_wait,
            allow_for=_seconds(options, "allow_for", 30 * DAY),
            max_entries=entries,
        )
        return GreylistCheck(db, env.reactor, parse_networks(skip, "skip_networks"), skip_spf)


factory = GreylistFactory()
