"""The lists' spool: whole entries or none, in arrival order, leftovers of a crash removed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ourmail.interfaces import ListArrival
from ourmail.lists import spool as spoolmod
from ourmail.lists.spool import Spool

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def arrival(n: int) -> ListArrival:
    return ListArrival("team@example.test", f"p{n}@example.org", "192.0.2.1", "", f"id{n}", 1.5, 40)


def test_entries_kept_in_order_from_bytes_streams_and_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    source = tmp_path / "incoming"
    source.write_bytes(MESSAGE)
    first = spool.keep(arrival(1), MESSAGE)
    second = spool.keep(arrival(2), io.BytesIO(MESSAGE))
    third = spool.keep(arrival(3), source)
    # A file on the same file system is linked, never read into memory.
    assert third.stat().st_ino == source.stat().st_ino
    pending = spool.pending()
    assert [a for a, _ in pending] == [arrival(1), arrival(2), arrival(3)]
    assert [p for _, p in pending] == [first, second, third]
    assert all(p.read_bytes() == MESSAGE for p in (first, second, third))
    spool.done(second)
    assert [a.id for a, _ in spool.pending()] == ["id1", "id3"]
    assert sorted(os.listdir(spool.root)) == sorted(
        [first.name, first.with_suffix(".json").name, third.name, third.with_suffix(".json").name]
    )


def test_a_failed_keep_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spoolmod, "write_atomic", disk_full)
    with pytest.raises(OSError):
        spool.keep(arrival(1), MESSAGE)
    assert os.listdir(spool.root) == []
    assert spool.pending() == []


def test_leftovers_of_a_crash_are_removed_at_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    whole = spool.keep(arrival(1), MESSAGE)
    # A crash after the message, before its JSON; a crash inside done(); a temporary JSON.
    (spool.root / "00000000000000000001-000000-1.eml").write_bytes(MESSAGE)
    (spool.root / "00000000000000000002-000000-1.json").write_bytes(b"{}")
    (spool.root / ".00000000000000000003-000000-1.json.1.tmp").write_bytes(b"{")
    assert [p for _, p in spool.pending()] == [whole]
    assert spool.recover(min_age=3600) == 0  # young: perhaps another process writing them
    assert spool.recover() == 3
    assert sorted(os.listdir(spool.root)) == sorted([whole.name, whole.with_suffix(".json").name])


def test_a_failing_entry_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    kept = spool.keep(arrival(1), MESSAGE)
    moved = spool.move(kept, tmp_path / "failed")
    assert spool.pending() == []
    assert moved.read_bytes() == MESSAGE and moved.with_suffix(".json").exists()


WRITER = """
import sys
from pathlib import Path
from ourmail.interfaces import ListArrival
from ourmail.lists.spool import Spool
spool = Spool(Path(sys.argv[1]))
body = b"x" * 200_000
n = 0
while True:
    spool.keep(ListArrival("team@example.test", "p@example.org", id=str(n)), body + str(n).encode())
    n += 1
    if n == 3:
        print("ready", flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.1])
def test_a_killed_writer_leaves_whole_entries_only(tmp_path: Path, delay: float) -> None:
    root = tmp_path / "spool"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    time.sleep(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    spool = Spool(root)
    spool.recover()
    pending = spool.pending()
    assert len(pending) >= 3
    assert sorted(os.listdir(root)) == sorted(
        n for _, p in pending for n in (p.name, p.with_suffix(".json").name)
    )
    for arrival, path in pending:
        assert path.read_bytes() == b"x" * 200_000 + arrival.id.encode()
    assert [int(a.id) for a, _ in pending] == list(range(len(pending)))
