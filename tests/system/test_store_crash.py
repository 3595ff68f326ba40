"""kill -9 between the steps of every store operation: nothing acknowledged is lost, nothing
is doubled, and the store opens cleanly afterwards (issue 3, point 7)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ourmail.store.folder import MaildirFolder
from ourmail.store.userstore import MaildirStore, ensure_default_folders

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
USER = "alice@example.org"


def worker(
    data: Path, operation: str, crash: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    env.pop("OURMAIL_CRASH_AT", None)
    if crash:
        env["OURMAIL_CRASH_AT"] = crash
    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "crash_worker.py"), str(data), operation],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def inbox(data: Path) -> MaildirFolder:
    """A fresh process's view of the INBOX (as after a restart)."""
    return MaildirFolder(MaildirStore(data).shards.user_dir(USER), "INBOX")


def numbers(folder: MaildirFolder) -> dict[int, int]:
    """message number -> uid, checking that no message is there twice."""
    seen: dict[int, int] = {}
    for uid in folder.uids():
        n = int(re.search(rb"message (\d+)", folder.message(uid).read()).group(1))
        assert n not in seen, f"message {n} appears twice (uids {seen[n]} and {uid})"
        seen[n] = uid
    return seen


def populate(data: Path) -> None:
    done = worker(data, "deliver")
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr


@pytest.mark.parametrize(
    "crash",
    ["delivery-prepared:2", "delivery-renamed:7", "delivery-journaled:2", "delivery-synced:2"],
)
def test_crash_during_delivery(tmp_path: Path, crash: str) -> None:
    proc = worker(tmp_path, "deliver", crash)
    assert proc.returncode == -9, proc.stderr
    acked = {int(n): int(uid) for n, uid in re.findall(r"ACK (\d+) (\d+)", proc.stdout)}
    for _restart in range(2):  # and again after a second "restart"
        present = numbers(inbox(tmp_path))
        for n, uid in acked.items():
            assert present.get(n) == uid, f"acknowledged message {n} lost or renumbered"
    # The store keeps working: the interrupted deliveries can simply be retried.
    assert worker(tmp_path, "deliver").returncode == 0


def test_crash_during_flag_change(tmp_path: Path) -> None:
    populate(tmp_path)
    before = numbers(inbox(tmp_path))
    assert worker(tmp_path, "flags", "flags-renamed:10").returncode == -9
    folder = inbox(tmp_path)
    assert numbers(folder) == before
    states = [folder.message(uid).flags for uid in folder.uids()]
    assert all(f in (frozenset(), {"\\Seen", "$Done"}) for f in states)
    assert {"\\Seen", "$Done"} in states and frozenset() in states
    # What the store reports matches the files (the truth) in a further restart.
    again = inbox(tmp_path)
    assert [again.message(u).flags for u in again.uids()] == states


def test_crash_during_expunge(tmp_path: Path) -> None:
    populate(tmp_path)
    before = numbers(inbox(tmp_path))
    assert worker(tmp_path, "expunge", "expunge-unlinked:5").returncode == -9
    after = numbers(inbox(tmp_path))
    assert 0 < len(after) < len(before)
    assert all(before[n] == uid for n, uid in after.items())


def test_crash_during_folder_rename(tmp_path: Path) -> None:
    user = MaildirStore(tmp_path).user(USER)
    ensure_default_folders(user)
    for name in ("Projects", "Projects/a", "Projects/b"):
        user.create_folder(name)
    assert worker(tmp_path, "rename", "folder-renamed:2").returncode == -9
    names = MaildirStore(tmp_path).user(USER).list_folders()
    for child in ("a", "b"):
        assert (f"Projects/{child}" in names) != (f"Work/{child}" in names), names
    assert ("Projects" in names) != ("Work" in names)


def test_crash_during_journal_compaction(tmp_path: Path) -> None:
    populate(tmp_path)
    folder = inbox(tmp_path)
    before, validity = numbers(folder), folder.uidvalidity
    assert worker(tmp_path, "compact", "compact:1").returncode == -9
    after = inbox(tmp_path)
    assert numbers(after) == before and after.uidvalidity == validity


@pytest.mark.parametrize("crash", ["shard-copied:1", "shard-switched:1"])
def test_crash_during_shard_move(tmp_path: Path, crash: str) -> None:
    from ourmail.store.shards import shard_of

    populate(tmp_path)
    before = numbers(inbox(tmp_path))
    shard = f"{shard_of(USER):02x}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OURMAIL_CRASH_AT": crash}
    cmd = [sys.executable, "-m", "ourmail", "shard", "move", shard, "--to", "vol2", "--data"]
    proc = subprocess.run([*cmd, str(tmp_path)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    # Whichever copy the map names now is complete, with the same UIDs.
    assert numbers(inbox(tmp_path)) == before
    # The move can be run again (or is already done) and the mail stays whole.
    env.pop("OURMAIL_CRASH_AT")
    subprocess.run([*cmd, str(tmp_path)], env=env, capture_output=True, timeout=120)
    assert numbers(inbox(tmp_path)) == before
    assert str(MaildirStore(tmp_path).shards.user_dir(USER)).startswith(str(tmp_path / "vol2"))


def test_two_processes_deliver_into_one_folder(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    script = str(REPO / "tests" / "crash_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(tmp_path), "deliver", str(first)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for first in (0, 1000)
    ]
    acked = {}
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        acked.update({int(n): int(uid) for n, uid in re.findall(r"ACK (\d+) (\d+)", out)})
    assert len(acked) == 80 and len(set(acked.values())) == 80  # every UID given once
    assert numbers(inbox(tmp_path)) == acked
