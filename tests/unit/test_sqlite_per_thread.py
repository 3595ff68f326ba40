"""``sqlitefile.PerThread``: one connection per thread, every one closed by ``close`` (a
stopped server left three open per start), and never while a thread is using it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ourmail.filters.sqlitefile import PerThread

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER);"


def open_files(path: Path) -> int:
    """How many of this process's descriptors are open on ``path`` (and its -wal, -shm)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(path))
        except OSError:  # the listing's own descriptor, gone
            continue
    return count


def test_close_closes_every_threads_connection(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    connections = PerThread(path, SCHEMA)

    def use() -> None:
        with connections.using() as db:
            db.execute("INSERT INTO t VALUES (1)")

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert open_files(path) >= 3
    connections.close()
    assert open_files(path) == 0
    with connections.using() as db:  # a later use opens a new one
        assert db.execute("SELECT count(*) FROM t").fetchone() == (3,)
    connections.close()


def test_close_waits_for_a_use_under_way(tmp_path: Path) -> None:
    connections = PerThread(tmp_path / "t.sqlite", SCHEMA)
    inside, release, done = threading.Event(), threading.Event(), []

    def slow() -> None:
        with connections.using() as db:
            inside.set()
            release.wait(10)
            done.append(db.execute("SELECT count(*) FROM t").fetchone())

    worker = threading.Thread(target=slow)
    worker.start()
    assert inside.wait(10)
    closer = threading.Thread(target=connections.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waits for the block
    release.set()
    worker.join(10)
    closer.join(10)
    assert done == [(0,)] and not closer.is_alive()
