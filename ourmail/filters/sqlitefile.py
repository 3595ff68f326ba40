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


def _connect(path: Path, synchronous: Synchronous, busy_timeout_ms: int) -> sqlite3.Connection:
    db = sqlite3.connect(os.fspath(path), timeout=busy_timeout_ms / 1000, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    return db


def create(path: Path, schema: str) -> None:
    """Make ``path`` (and its folder) a WAL database with ``schema`` (idempotent SQL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(_connect(path, "NORMAL", BUSY_TIMEOUT_MS)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(schema)


def per_thread(
    local: threading.local,
    path: Path,
    schema: str,
    synchronous: Synchronous = "NORMAL",
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
) -> sqlite3.Connection:
    """This thread's connection to ``path``, made (with the file and ``schema``) on first use
    and kept in ``local``."""
    connections: dict[str, sqlite3.Connection] = local.__dict__.setdefault("db", {})
    key = os.fspath(path)
    db = connections.get(key)
    if db is None:
        create(path, schema)
        db = _connect(path, synchronous, busy_timeout_ms)
        connections[key] = db
    return db


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
