"""The console's filter log search (``ourmail/manage/filterlogview.py``): a search that must
scan many rows is stopped after its time limit and says so, instead of holding a worker
thread for as long as the scan takes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ourmail.filters.filterlog import SCHEMA
from ourmail.manage import filterlogview
from ourmail.manage.filterlogview import FilterLogReader


def test_a_long_search_is_stopped_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany(
        "INSERT INTO events (at,recipient,client,action,stage,check_name,reason,sender,"
        "message_id) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            (n, f"u{n}@d.example", "192.0.2.1", "reject", "rcpt", "dnsbl", "listed", "s@x", None)
            for n in range(5000)
        ),
    )
    db.commit()
    db.close()
    reader = FilterLogReader(path, reactor=object())
    found = reader.page_now(None, "", "", "nowhere", 0, 50)
    assert (found.events, found.stopped) == ((), False)  # scanned to the end in time
    monkeypatch.setattr(filterlogview, "QUERY_SECONDS", -1.0)  # the limit already passed
    found = reader.page_now(None, "", "", "nowhere", 0, 50)
    assert found.stopped and found.events == ()
