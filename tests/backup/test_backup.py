"""``ourmail backup`` while real clients deliver over SMTP and change flags and expunge over
IMAP, then ``ourmail restore`` into a fresh data folder and a server started on it."""

from __future__ import annotations

import email
import errno
import imaplib
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, cli, client_tls, running_server

from ourmail.admin.cli import main as admin_main
from ourmail.backup import backup, folders, restore, upgrade
from ourmail.backup.manifest import DATA, Manifest
from ourmail.config import ConfigError
from ourmail.store.shards import ShardMap
from ourmail.vault.segments import SegmentLog
from ourmail.vault.verify import verify

BOB_MESSAGES = 40
SENDERS = 4


def _message(mid: str) -> bytes:
    body = f"body of {mid}\r\n" + "x" * 200 + "\r\n"
    return (
        f"From: s@else.test\r\nTo: t@example.test\r\nSubject: {mid}\r\n"
        f"Message-ID: <{mid}@else.test>\r\n\r\n{body}"
    ).encode()


def _send(srv: RunningServer, rcpt: str, mids: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        for mid in mids:
            s.sendmail("s@else.test", [rcpt], _message(mid))


def _imap(srv: RunningServer, user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
    m.login(user, srv.password)
    return m


def _state(m: imaplib.IMAP4) -> tuple[int, dict[str, tuple[int, frozenset[str], bytes]]]:
    """UIDVALIDITY and Message-ID -> (UID, flags, the whole message) of the INBOX."""
    m.select("INBOX")
    validity = int(m.response("UIDVALIDITY")[1][0])
    found = {}
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta = item[0].decode()
        uid = int(re.search(r"UID (\d+)", meta).group(1))
        flags = frozenset(re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split())
        mid = email.message_from_bytes(item[1])["Message-ID"].strip("<>").split("@")[0]
        found[mid] = (uid, flags - {"\\Recent"}, item[1])
    return validity, found


class Traffic:
    """4 SMTP clients delivering to alice, and an IMAP client flagging and expunging bob's
    mail, each recording what the server acknowledged."""

    def __init__(self, srv: RunningServer) -> None:
        self.srv = srv
        self.stop = threading.Event()
        self.acked: list[tuple[float, str]] = []  # (time of the 250, message id)
        self.ops: list[tuple[float, str, int]] = []  # (time of the OK, op, bob's uid)
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._deliver, args=(n,)) for n in range(SENDERS)]
        self.threads.append(threading.Thread(target=self._flags))

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert not self.errors, self.errors

    def _deliver(self, n: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.srv.port("smtp")) as s:
                i = 0
                while not self.stop.is_set():
                    mid = f"live-{n}-{i}"
                    s.sendmail("s@else.test", [self.srv.user], _message(mid))
                    self.acked.append((time.monotonic(), mid))
                    i += 1
        except BaseException as e:  # reported by __exit__
            self.errors.append(e)

    def _flags(self) -> None:
        try:
            m = _imap(self.srv, f"bob@{self.srv.domain}")
            m.select("INBOX")
            for uid in range(1, BOB_MESSAGES + 1):
                if self.stop.is_set():
                    break
                m.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
                self.ops.append((time.monotonic(), "flag", uid))
                if uid % 4 == 0:
                    m.uid("STORE", str(uid), "+FLAGS", "(\\Deleted)")
                    m.expunge()
                    self.ops.append((time.monotonic(), "expunge", uid))
                time.sleep(0.01)
            m.logout()
        except BaseException as e:
            self.errors.append(e)


def _bob_after(ops: list[tuple[float, str, int]]) -> dict[int, bool]:
    """bob's INBOX after ``ops``: uid -> flagged, without the expunged."""
    state = {uid: False for uid in range(1, BOB_MESSAGES + 1)}
    for _, op, uid in ops:
        if op == "flag":
            state[uid] = True
        else:
            del state[uid]
    return state


@pytest.fixture
def live(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path / "live") as srv:
        srv.add_user(f"bob@{srv.domain}")
        _send(srv, f"bob@{srv.domain}", [f"bob-{i}" for i in range(1, BOB_MESSAGES + 1)])
        _send(srv, srv.user, [f"early-{i}" for i in range(50)])
        yield srv


def test_backup_while_clients_work_restores_every_acknowledged_message(
    live: RunningServer, tmp_path: Path
) -> None:
    dest = tmp_path / "backups"
    with Traffic(live) as traffic:
        time.sleep(0.3)
        started = time.monotonic()
        acked_before = {mid for t, mid in traffic.acked if t < started}
        ops_before = [op for op in traffic.ops if op[0] < started]
        result = backup.run(live.data, dest)
        ended = time.monotonic()
        time.sleep(0.2)
    print(result.summary())
    during = sum(1 for t, _ in traffic.acked if started <= t < ended)
    print(f"{len(acked_before)} messages acknowledged before the backup, {during} during it")
    assert result.vault.startswith("chain verified"), result.vault
    assert len(acked_before) > 0 and result.counts.copied > BOB_MESSAGES + 50
    live_state = _state(_imap(live, live.user))
    ops_during = [op for op in traffic.ops if op[0] < ended]

    # The vault chain in the snapshot verifies on its own.
    assert verify(SegmentLog(result.path / DATA / "vault")).ok

    target = tmp_path / "restored" / "data"
    assert cli(live, "restore", str(result.path), str(target)) == 0
    for secret in ("accounts.json", "tls/key.pem", "srs/secret"):
        assert (target / secret).stat().st_mode & 0o077 == 0, secret
    with running_server(tmp_path / "restored") as again:
        validity, alice = _state(_imap(again, again.user))
        bob_validity, bob = _state(_imap(again, f"bob@{again.domain}"))
    # Every message acknowledged before the backup began is there, whole, with its UID and
    # the folder's UIDVALIDITY; a later one is there whole or not at all.
    assert validity == live_state[0]
    assert acked_before <= set(alice)
    for mid, (uid, _, raw) in alice.items():
        assert raw.replace(b"\r\n", b"\n") == _message(mid).replace(b"\r\n", b"\n") or (
            raw.endswith(_message(mid).split(b"\r\n\r\n", 1)[1])
        )
        assert live_state[1][mid][0] == uid
    # bob's INBOX is as it was after some prefix of the IMAP client's commands, taken between
    # the start and the end of the backup: never half a flag change or expunge.
    restored = {int(mid.split("-")[1]): "\\Flagged" in flags for mid, (_, flags, _) in bob.items()}
    candidates = [_bob_after(ops_during[:k]) for k in range(len(ops_before), len(ops_during) + 1)]
    assert restored in candidates, (restored, len(ops_before), len(ops_during))
    uids = {int(mid.split("-")[1]): uid for mid, (uid, _, _) in bob.items()}
    assert all(uids[n] == n for n in uids)  # bob's n-th message kept UID n
    assert bob_validity > 0


def test_incremental_backup_copies_what_changed(live: RunningServer, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    first = backup.run(live.data, dest)
    _send(live, live.user, [f"more-{i}" for i in range(100)])
    second = backup.run(live.data, dest)
    print(f"full: {first.summary()}\nincremental: {second.summary()}")
    assert second.base == first.path
    assert 100 <= second.counts.copied <= 100 + 12, second.summary()
    assert second.counts.linked >= first.counts.copied - 12
    # Each snapshot is whole on its own: the first still restores after the second is made.
    assert restore.restore(first.path, tmp_path / "r1").files == len(
        Manifest.read(first.path).files
    )
    assert restore.restore(second.path, tmp_path / "r2").files == len(
        Manifest.read(second.path).files
    )


def test_interrupted_backup_is_never_a_base_and_never_restored(
    live: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dest = tmp_path / "backups"
    first = backup.run(live.data, dest)

    def cut(*args: object) -> None:
        raise KeyboardInterrupt  # as if killed before the manifest was written

    monkeypatch.setattr(Manifest, "write", cut)
    with pytest.raises(KeyboardInterrupt):
        backup.run(live.data, dest)
    monkeypatch.undo()
    (partial,) = dest.glob("*.partial")
    assert cli(live, "restore", str(partial), str(tmp_path / "new")) == 1
    assert "interrupted" in capsys.readouterr().err
    # A copy without its manifest, as a kill leaves it under any name, is refused too.
    torn = dest / "torn"
    shutil.copytree(partial, torn)
    assert cli(live, "restore", str(torn), str(tmp_path / "new")) == 1
    assert not (tmp_path / "new").exists()
    shutil.rmtree(torn)
    third = backup.run(live.data, dest)
    assert third.base == first.path
    assert not list(dest.glob("*.partial"))
    assert third.counts.copied <= 12, third.summary()


def test_restore_refuses_a_folder_that_is_not_empty(
    live: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(live, "backup", str(tmp_path / "backups")) == 0
    out = capsys.readouterr().out
    assert re.match(r"snapshot \S+: \d+ files copied .* vault: chain verified", out), out
    (snapshot,) = backup.snapshots(tmp_path / "backups")
    target = tmp_path / "busy"
    target.mkdir()
    (target / "something").write_text("mine")
    assert cli(live, "restore", str(snapshot), str(target)) == 1
    err = capsys.readouterr().err
    assert "is not empty" in err and "Traceback" not in err
    assert sorted(p.name for p in target.iterdir()) == ["something"]
    assert cli(live, "restore", str(tmp_path / "backups"), str(tmp_path / "new")) == 1
    err = capsys.readouterr().err
    assert f"is a backup folder: name one of its snapshots (the latest is {snapshot})" in err


def test_restore_puts_shards_on_another_volume(live: RunningServer, tmp_path: Path) -> None:
    snapshot = backup.run(live.data, tmp_path / "backups").path
    volume = tmp_path / "volume"
    volume.mkdir()
    target = tmp_path / "restored" / "data"
    done = restore.restore(snapshot, target, [restore.ShardRoot.parse(f"00-ff={volume}")])
    assert done.files > 0
    assert 'root = "' + str(volume) in (target / "shards.toml").read_text()
    assert not any((target / "mail").iterdir())
    with running_server(tmp_path / "restored") as again:
        assert len(_state(_imap(again, again.user))[1]) == 50


def test_a_restore_cut_short_is_refused_until_emptied(
    live: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    snapshot = backup.run(live.data, tmp_path / "backups").path
    copied: list[Path] = []
    real = restore._copy

    def cut(source: Path, target: Path, *args: Any) -> None:
        if len(copied) == 20:
            raise KeyboardInterrupt  # as if killed half-way
        copied.append(target)
        real(source, target, *args)

    monkeypatch.setattr(restore, "_copy", cut)
    target = tmp_path / "half"
    with pytest.raises(KeyboardInterrupt):
        restore.restore(snapshot, target)
    monkeypatch.undo()
    assert admin_main(["--data", str(target), "user", "list"]) == 1
    assert "did not finish: empty it" in capsys.readouterr().err
    assert cli(live, "restore", str(snapshot), str(target)) == 1
    assert "was interrupted: empty it" in capsys.readouterr().err
    shutil.rmtree(target)
    assert cli(live, "restore", str(snapshot), str(target)) == 0
    assert not (target / restore.INCOMPLETE).exists()


def test_a_message_expunged_while_its_folder_is_copied(
    live: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the locked moment and the copy, bob's message 1 is expunged and message 2
    flagged: the folder is taken again, and the snapshot is the folder at that second moment."""
    bob = f"bob@{live.domain}"

    def expunge_and_flag() -> None:
        m = _imap(live, bob)
        m.select("INBOX")
        m.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        m.expunge()
        m.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
        m.logout()

    inbox = ShardMap(live.data).user_dir(bob)
    result = _backup_acting_once_taken(live, tmp_path, monkeypatch, inbox, expunge_and_flag)
    live_validity, live_bob = _state(_imap(live, bob))
    target = tmp_path / "restored" / "data"
    restore.restore(result.path, target)
    with running_server(tmp_path / "restored") as again:
        validity, restored = _state(_imap(again, bob))
    assert validity == live_validity
    assert {mid: (uid, flags) for mid, (uid, flags, _) in restored.items()} == {
        mid: (uid, flags) for mid, (uid, flags, _) in live_bob.items()
    }
    assert "bob-1" not in restored and "\\Flagged" in restored["bob-2"][1]


def _backup_acting_once_taken(
    live: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    act: Callable[[], None],
) -> backup.Result:
    """A backup of ``live`` that calls ``act`` once, just after the Maildir folder ``folder``
    was taken (its moment recorded, with its mailbox's other folders) and before its
    messages are copied."""
    real = folders._take
    done: list[bool] = []

    def meanwhile(group: list[tuple[Path, str]]) -> Any:
        moments = real(group)
        if any(path == folder for path, _ in group) and not done:
            done.append(True)
            act()
        return moments

    monkeypatch.setattr(folders, "_take", meanwhile)
    result = backup.run(live.data, tmp_path / "backups")
    monkeypatch.undo()
    assert done
    return result


def test_a_folder_renamed_during_the_backup_is_not_missed(
    live: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _imap(live, live.user)
    m.select("INBOX")
    m.uid("COPY", "1:3", "Trash")
    m.logout()

    def rename() -> None:
        m = _imap(live, live.user)
        m.rename("Trash", "Bin")
        m.logout()

    trash = ShardMap(live.data).user_dir(live.user) / ".Trash"
    result = _backup_acting_once_taken(live, tmp_path, monkeypatch, trash, rename)
    restore.restore(result.path, tmp_path / "restored" / "data")
    with running_server(tmp_path / "restored") as again:
        m = _imap(again, again.user)
        typ, data = m.select("Bin")
        assert typ == "OK" and int(data[0]) == 3
        m.logout()


def test_a_backup_killed_mid_way_leaves_nothing_usable(tmp_path: Path) -> None:
    """``kill -9`` of a running ``ourmail backup``: its folder has no manifest, so it is not
    a snapshot; the next run removes it and makes a whole one."""
    data = tmp_path / "data"
    folder = data / "mail" / "00" / "example.test" / "u"
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True)
    for n in range(3000):
        (folder / "new" / f"1800000000.M{n}P1.test,S=40").write_bytes(b"Subject: %d\r\n\r\n" % n)
    (data / "accounts.json").write_text('{"users": {}}')
    dest = tmp_path / "backups"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "ourmail", "--data", str(data), "backup", str(dest)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not list(dest.glob("*.partial/data/mail")) and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.kill()
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    (partial,) = dest.glob("*.partial")
    assert backup.snapshots(dest) == []
    with pytest.raises(restore.RestoreError, match=r"no manifest\.json"):
        restore.restore(partial, tmp_path / "new")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (
        "3002 files copied" in done.stdout
    )  # the messages, accounts.json, shards.toml and "linked from no earlier" in done.stdout
    assert not list(dest.glob("*.partial")) and len(backup.snapshots(dest)) == 1


def test_restore_refuses_a_manifest_naming_paths_outside(
    live: RunningServer, tmp_path: Path
) -> None:
    snapshot = backup.run(live.data, tmp_path / "backups").path
    manifest = json.loads((snapshot / "manifest.json").read_text())
    manifest["files"]["../../escaped"] = manifest["files"].pop("accounts.json")
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(restore.RestoreError, match="outside the snapshot"):
        restore.restore(snapshot, tmp_path / "new")
    assert not (tmp_path / "new").exists() and not (tmp_path / "escaped").exists()
    manifest["files"]["mail/zz/x"] = manifest["files"].pop("../../escaped")
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(restore.RestoreError, match="'mail/zz/x', in no shard"):
        restore.restore(snapshot, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_message_moved_between_folders_during_the_backup_is_not_lost(
    live: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMAP MOVE from Trash back to the INBOX after the INBOX's moment, before Trash's: the
    mailbox's folders are taken at one moment, so the messages are in one of them (or, as
    mid-move, in both, each with its folder's UIDs), never in neither."""
    m = _imap(live, live.user)
    m.select("INBOX")
    m.uid("COPY", "1:3", "Trash")
    inbox_before = int(m.select("INBOX")[1][0])
    m.logout()

    def move_back() -> None:
        m = _imap(live, live.user)
        m.select("Trash")
        assert m.uid("MOVE", "1:*", "INBOX")[0] == "OK"
        m.logout()

    inbox = ShardMap(live.data).user_dir(live.user)
    result = _backup_acting_once_taken(live, tmp_path, monkeypatch, inbox, move_back)
    restore.restore(result.path, tmp_path / "restored" / "data")
    with running_server(tmp_path / "restored") as again:
        m = _imap(again, again.user)
        in_inbox = int(m.select("INBOX")[1][0])
        in_trash = int(m.select("Trash")[1][0])
        m.logout()
    assert (in_inbox, in_trash) in {(inbox_before, 3), (inbox_before + 3, 0)}


def test_a_dest_reached_through_a_symbolic_link_into_the_data_folder_is_refused(
    live: RunningServer, tmp_path: Path
) -> None:
    (tmp_path / "link").symlink_to(live.data)
    with pytest.raises(backup.BackupError, match="is inside the data folder"):
        backup.run(live.data, tmp_path / "link" / "backups")
    assert not (live.data / "backups").exists()


def test_a_snapshot_is_never_used_as_a_data_folder(
    live: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its files are hard links shared with the other snapshots: a server or a command
    writing there would change them all (and the manifests' sha256 would no longer match).
    Whatever the umask and DEST's mode, a snapshot is its owner's alone."""
    (tmp_path / "backups").mkdir(mode=0o755)
    old_umask = os.umask(0o022)
    try:
        result = backup.run(live.data, tmp_path / "backups")
    finally:
        os.umask(old_umask)
    assert result.path.stat().st_mode & 0o777 == 0o700
    for secret in ("manifest.json", f"{DATA}/accounts.json", f"{DATA}/tls/key.pem"):
        assert (result.path / secret).stat().st_mode & 0o077 == 0, secret
    before = (result.path / DATA / "accounts.json").read_bytes()
    assert admin_main(["--data", str(result.path / DATA), "user", "list"]) == 1
    assert "is a backup snapshot's copy" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="is a backup snapshot's copy"):
        upgrade.prepare(result.path / DATA)
    assert (result.path / DATA / "accounts.json").read_bytes() == before


def test_a_folder_deleted_after_its_moment_is_left_out(
    live: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _imap(live, live.user)
    m.create("Old")
    m.select("INBOX")
    m.uid("COPY", "1:3", "Old")
    m.logout()

    def delete() -> None:
        m = _imap(live, live.user)
        assert m.delete("Old")[0] == "OK"
        m.logout()

    old = ShardMap(live.data).user_dir(live.user) / ".Old"
    result = _backup_acting_once_taken(live, tmp_path, monkeypatch, old, delete)
    manifest = Manifest.read(result.path)
    assert not [p for p in (*manifest.files, *manifest.dirs) if "/.Old" in p]
    restore.restore(result.path, tmp_path / "restored" / "data")
    with running_server(tmp_path / "restored") as again:
        m = _imap(again, again.user)
        assert m.select("Old")[0] == "NO"
        assert m.select("INBOX")[0] == "OK"
        m.logout()


def test_a_dest_without_hard_links_gets_whole_copies(
    live: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some file systems (FUSE, SMB, exFAT) refuse link(2) with EOPNOTSUPP: copy instead."""
    first = backup.run(live.data, tmp_path / "backups")

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "link", no_links)
    second = backup.run(live.data, tmp_path / "backups")
    assert second.counts.linked == 0 and second.counts.copied == first.counts.copied


def test_a_data_folder_on_its_own_file_system(live: RunningServer, tmp_path: Path) -> None:
    """Its lost+found (root's, mode 0700) is not data: left out of the snapshot, and a new
    volume holding only an empty one is a fine place to restore to."""
    (live.data / "lost+found").mkdir(mode=0o700)
    (live.data / "lost+found" / "#1234").write_text("fsck's")
    result = backup.run(live.data, tmp_path / "backups")
    assert not (result.path / DATA / "lost+found").exists()
    target = tmp_path / "volume"
    (target / "lost+found").mkdir(parents=True)
    restore.restore(result.path, target)
    assert (target / "accounts.json").exists()


def test_a_vault_copy_that_does_not_verify_fails_the_command(
    live: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The snapshot is kept (it is whole), but the exit status says so: cron and the
    documented `ourmail backup … && prune` keep the older snapshots."""
    (segment,) = sorted((live.data / "vault" / "segments").iterdir())[:1]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert cli(live, "backup", str(tmp_path / "backups")) == 1
    captured = capsys.readouterr()
    assert "vault: the copied chain does NOT verify" in captured.out
    assert captured.err.startswith("ourmail: backup made, but its vault copy does not verify")
    assert len(backup.snapshots(tmp_path / "backups")) == 1
