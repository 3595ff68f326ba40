"""The SQLite files the checks keep their state in (greylisting, spam preferences, the filter
log, the learning queue), opened one way: WAL, so every MX process of the server shares them,
with a busy time-out so they wait for each other's writes.  Every function blocks: call it
from a thread, never the reactor."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

#: How long a writer waits for another process's write before giving up.
BUSY_TIMEOUT_MS = 5000

Synchronous = Literal["NORMAL", "FULL"]


def _connect(
    path: Path, synchronous: Synchronous, busy_timeout_ms: int, same_thread: bool = True
) -> sqlite3.Connection:
    # same_thread=False only lets PerThread.close close a connection another thread made:
    # each is still used by the one thread that made it.
    db = sqlite3.connect(
        os.fspath(path),
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=same_thread,
    )
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    return db


def create(path: Path, schema: str) -> None:
    """Make ``path`` (and its folder) a WAL database with ``schema`` (idempotent SQL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(_connect(path, "NORMAL", BUSY_TIMEOUT_MS)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(schema)


class PerThread:
    """One connection to ``path`` for each thread that asks (made, with the file and
    ``schema``, on first use); :meth:`close` closes them all, whichever thread made them."""

    def __init__(
        self,
        path: Path,
        schema: str,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> None:
        self.path = path
        self._schema = schema
        self._synchronous: Synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        #: Each connection with the lock its thread holds while using it (re-entrant: a use
        #: may call another).
        self._all: list[tuple[sqlite3.Connection, threading.RLock]] = []

    def get(self) -> sqlite3.Connection:
        """This thread's connection, for callers that never :meth:`close` (use
        :meth:`using` where close may come from another thread)."""
        return self._mine()[0]

    @contextlib.contextmanager
    def using(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, not closed by :meth:`close` until the block ends."""
        db, busy = self._mine()
        with busy:
            yield db

    def _mine(self) -> tuple[sqlite3.Connection, threading.RLock]:
        mine: tuple[sqlite3.Connection, threading.RLock] | None = getattr(self._local, "db", None)
        if mine is None:
            with self._lock:  # threads' first uses of a new file make it one at a time
                create(self.path, self._schema)
            db = _connect(self.path, self._synchronous, self._busy_timeout_ms, same_thread=False)
            mine = (db, threading.RLock())
            self._local.db = mine
            with self._lock:
                self._all.append(mine)
        return mine

    def close(self) -> None:
        """Close every thread's connection, each once its :meth:`using` block is over (a
        later use opens a new one)."""
        with self._lock:
            connections, self._all = self._all, []
            self._local = threading.local()
        for db, busy in connections:
            with busy:
                db.close()


@contextlib.contextmanager
def connection(
    path: Path, synchronous: Synchronous, busy_timeout_ms: int = 30_000
) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` (made with :func:`create`) for one piece of work, closed
    after it (autocommit: ``BEGIN IMMEDIATE`` for a transaction)."""
    db = _connect(path, synchronous, busy_timeout_ms)
    try:
        yield db
    finally:
        db.close()
