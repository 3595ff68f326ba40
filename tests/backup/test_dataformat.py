"""The data folder's format version: recorded at first start, an older one upgraded in place
after a backup (crash-safe), a newer one refused by the server's start and by the commands."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import running_server

from ourmail.admin.cli import main as admin_main
from ourmail.backup import backup, dataformat, upgrade
from ourmail.backup.dataformat import FormatError
from ourmail.backup.manifest import DATA, Manifest
from ourmail.fsutil import write_atomic


def _add_key(data: Path) -> None:
    """A real step 1 -> 2: accounts.json gains a key (idempotent, as steps must be)."""
    path = data / "accounts.json"
    accounts = json.loads(path.read_bytes())
    accounts["format2"] = True
    write_atomic(path, json.dumps(accounts).encode(), 0o600)


STEP_2 = upgrade.Step(2, "accounts.json gains the key format2", _add_key)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped data folder of today's format, made once."""
    with running_server(tmp_path_factory.mktemp("made")) as srv:
        assert (srv.data / "format").read_text() == "1\n"  # recorded at the first start
    return srv.data


@pytest.fixture
def data(made: Path, tmp_path: Path) -> Path:
    """A copy of it for one test."""
    shutil.copytree(made, tmp_path / "data", symlinks=True)
    return tmp_path / "data"


def test_a_folder_from_before_versioning_is_format_1(data: Path) -> None:
    (data / "format").unlink()
    assert dataformat.read(data) == 1
    assert upgrade.prepare(data) == 1
    assert (data / "format").read_text() == "1\n"


def test_an_older_folder_is_backed_up_then_upgraded(data: Path, tmp_path: Path) -> None:
    before = (data / "accounts.json").read_bytes()
    backups = tmp_path / "pre-upgrade"
    assert upgrade.prepare(data, (STEP_2,), backups) == 2
    assert (data / "format").read_text() == "2\n"
    assert json.loads((data / "accounts.json").read_bytes())["format2"] is True
    assert not (data / upgrade.MARKER).exists()
    (snapshot,) = backup.snapshots(backups)
    assert Manifest.read(snapshot).data_format == 1
    assert (snapshot / DATA / "accounts.json").read_bytes() == before
    assert upgrade.prepare(data, (STEP_2,), backups) == 2  # the same version: nothing to do
    assert len(backup.snapshots(backups)) == 1


def test_an_upgrade_cut_short_is_run_again_without_a_second_backup(
    data: Path, tmp_path: Path
) -> None:
    calls: list[int] = []

    def crashes_once(folder: Path) -> None:
        calls.append(1)
        _add_key(folder)
        if len(calls) == 1:
            raise KeyboardInterrupt  # as if the power went, after the change, before the record

    step = upgrade.Step(2, "crashes once", crashes_once)
    backups = tmp_path / "pre-upgrade"
    with pytest.raises(KeyboardInterrupt):
        upgrade.prepare(data, (step,), backups)
    assert dataformat.read(data) == 1 and (data / upgrade.MARKER).exists()
    assert upgrade.prepare(data, (step,), backups) == 2
    assert len(calls) == 2 and len(backup.snapshots(backups)) == 1
    assert json.loads((data / "accounts.json").read_bytes())["format2"] is True


def test_the_default_backup_folder_is_in_the_data_folder_and_left_out_of_backups(
    data: Path,
) -> None:
    upgrade.prepare(data, (STEP_2,))
    (snapshot,) = backup.snapshots(data / "pre-upgrade")
    assert not (snapshot / DATA / "pre-upgrade").exists()
    upgrade.prepare(data, (STEP_2, upgrade.Step(3, "nothing", lambda folder: None)))
    second = backup.snapshots(data / "pre-upgrade")[-1]
    assert not (second / DATA / "pre-upgrade").exists()  # never a backup of the backups


def test_a_newer_format_stops_the_server_with_one_line(data: Path) -> None:
    (data / "format").write_text("2\n")
    twistd = Path(sys.executable).with_name("twistd")
    done = subprocess.run(
        [str(twistd), "-n", "--pidfile=", "ourmail", "--data", str(data)],
        cwd=data.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "is in format 2, newer than this ourmail understands (format 1)" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    with pytest.raises(FormatError, match="newer than this ourmail"):
        upgrade.prepare(data)


def test_a_newer_format_stops_the_commands(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (data / "format").write_text("7\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert admin_main(["--data", str(data), "user", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is in format 7, newer than this ourmail" in err
    assert admin_main(["--data", str(data), "backup", str(data.parent / "b")]) == 1
    assert "newer than this ourmail" in capsys.readouterr().err


def test_the_commands_refuse_a_folder_not_upgraded_yet(data: Path) -> None:
    with pytest.raises(FormatError, match="older than this ourmail's 2: start the server"):
        upgrade.check_cli(data, (STEP_2,))


def test_the_server_upgrades_an_older_folder_as_it_starts(
    made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release with a step 1 -> 2 started on a format-1 data folder: backup, step, start."""
    shutil.copytree(made, tmp_path / "data", symlinks=True)
    monkeypatch.setattr(upgrade, "STEPS", (STEP_2,))
    with running_server(tmp_path) as srv:
        assert (srv.data / "format").read_text() == "2\n"
        assert json.loads((srv.data / "accounts.json").read_bytes())["format2"] is True
        assert srv.server.accounts.has_user(srv.user)  # the account survived the step
    (snapshot,) = backup.snapshots(srv.data / "pre-upgrade")
    assert Manifest.read(snapshot).data_format == 1
    assert "format2" not in json.loads((snapshot / DATA / "accounts.json").read_bytes())


def test_ourmail_upgrade_refuses_while_a_server_uses_the_folder(
    made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(made, tmp_path / "data", symlinks=True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with running_server(tmp_path) as srv:
        monkeypatch.setattr(upgrade, "STEPS", (STEP_2,))
        assert admin_main(["--data", str(srv.data), "upgrade"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "a running server (or another upgrade) uses" in err
        assert dataformat.read(srv.data) == 1 and not (srv.data / "pre-upgrade").exists()
    assert admin_main(["--data", str(srv.data), "upgrade"]) == 0  # stopped: it upgrades
    assert dataformat.read(srv.data) == 2


def test_a_marker_left_after_the_last_step_is_not_the_next_upgrades_backup(
    data: Path, tmp_path: Path
) -> None:
    """A crash after the last step's record, before the marker went: the next start removes
    the marker, so the next release's upgrade makes its own backup."""
    backups = tmp_path / "pre-upgrade"
    upgrade.prepare(data, (STEP_2,), backups)
    write_atomic(data / upgrade.MARKER, b'{"from": 1, "backup": "old"}', 0o600)
    assert upgrade.prepare(data, (STEP_2,), backups) == 2
    assert not (data / upgrade.MARKER).exists()
    step_3 = upgrade.Step(3, "nothing", lambda folder: None)
    assert upgrade.prepare(data, (STEP_2, step_3), backups) == 3
    assert [Manifest.read(s).data_format for s in backup.snapshots(backups)] == [1, 2]


def test_a_data_folder_that_cannot_be_made_is_one_line() -> None:
    """Not an OSError traceback from twistd (even as root, nothing can be made in /proc)."""
    with pytest.raises(FormatError, match=r"cannot create the data folder /proc/ourmail/data: "):
        upgrade.prepare(Path("/proc/ourmail/data"))


def test_twistd_on_a_folder_from_before_versioning_starts_and_records_it(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No format file (a server from before this release): twistd starts as before, with no
    question asked, and writes it; while it runs, `ourmail upgrade` in another process is
    refused."""
    from twistdhelp import Twistd

    (data / "format").unlink()
    server = Twistd(data)
    try:
        assert (data / "format").read_text() == "1\n"
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        monkeypatch.setattr(upgrade, "STEPS", (STEP_2,))
        assert admin_main(["--data", str(data), "upgrade"]) == 1
        assert "a running server (or another upgrade) uses" in capsys.readouterr().err
    finally:
        server.stop()
    assert admin_main(["--data", str(data), "upgrade"]) == 0
    assert dataformat.read(data) == 2


def test_ourmail_upgrade_on_a_mistyped_folder_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "in this ourmail's format already" for a folder that holds no data folder."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert admin_main(["--data", str(tmp_path / "typo"), "upgrade"]) == 1
    assert "is not an ourmail data folder (--data?)" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
