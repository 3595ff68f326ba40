"""Checking a data folder's format at start, and upgrading an older one in place.

:data:`STEPS` is the ordered registry: ``STEPS[i]`` turns format ``i + 1`` into ``i + 2``.
Today's format is 1 and there is no step yet; a release that changes the data folder adds its
step here and raises :data:`ourmail.backup.dataformat.CURRENT`.

An upgrade is crash-safe and may be run again at any point:

1. a backup of the whole data folder (backup.py) into the backup folder, unless the marker
   ``<data>/format.upgrading`` says one was made for this upgrade already;
2. the marker, written atomically, naming the version upgraded from and the snapshot;
3. each step in turn, then the new version recorded in ``<data>/format`` (atomically).  A
   step must be idempotent: after a crash in it, the next start runs it again on a folder
   it may have partly changed;
4. the marker removed (a marker left by a crash after the last step is removed at the next
   start, so it never stands for the backup of a later upgrade).

A running server holds a shared ``flock`` on ``<data>/format.lock`` and an upgrade an
exclusive one: ``ourmail upgrade`` refuses to change a data folder a server is using, and a
server does not start while an upgrade runs.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from twisted.logger import Logger

from ourmail.backup import backup, dataformat
from ourmail.backup.dataformat import FormatError
from ourmail.fsutil import fsync_dir, write_atomic

MARKER = "format.upgrading"
#: Held shared by a running server, exclusively by an upgrade.
LOCK = "format.lock"
log = Logger()
#: The shared locks this process holds as a server: data folder -> descriptor.
_serving: dict[Path, int] = {}


@attrs.frozen
class Step:
    """One upgrade: from format ``to - 1`` to ``to``; ``apply`` must be idempotent."""

    to: int
    what: str
    apply: Callable[[Path], None]


#: The registry, in order (none yet: format 1 is today's).
STEPS: tuple[Step, ...] = ()
assert 1 + len(STEPS) == dataformat.CURRENT


def current(steps: Sequence[Step] | None = None) -> int:
    """The format a registry (default: :data:`STEPS`) upgrades to."""
    steps = STEPS if steps is None else steps
    for i, step in enumerate(steps):
        if step.to != i + 2:
            raise AssertionError(f"upgrade step {i} goes to {step.to}, not {i + 2}")
    return 1 + len(steps)


def default_backup_dir(data_dir: Path) -> Path:
    """Where the backup before an upgrade goes: ``<data>/pre-upgrade`` (left out of backups).
    Inside the data folder, as that is the one place a hardened service may write."""
    return data_dir.absolute() / backup.UPGRADE_BACKUPS


def check(data_dir: Path, steps: Sequence[Step] | None = None) -> int | None:
    """Refuse a newer format (FormatError); the folder's version, None for a new folder."""
    version = dataformat.read(data_dir)
    latest = current(steps)
    if version is not None and version > latest:
        raise FormatError(dataformat.too_new(data_dir, version, latest))
    return version


def check_cli(data_dir: Path, steps: Sequence[Step] | None = None) -> None:
    """For the admin commands: a newer format or an older one (not upgraded yet) is refused."""
    version = check(data_dir, steps)
    if version is not None and version < current(steps):
        raise FormatError(
            f"the data folder {data_dir} is in format {version}, older than this ourmail's "
            f"{current(steps)}: start the server (it upgrades it, with a backup first) or run "
            "`ourmail upgrade` with the server stopped"
        )


def prepare(
    data_dir: Path,
    steps: Sequence[Step] | None = None,
    backup_dir: Path | None = None,
    vault_roots: Sequence[Path] = (),
) -> int:
    """At start: record the format of a new data folder, go on with the same one, upgrade an
    older one (a backup first), refuse a newer one (FormatError).  The version now; the
    folder is then held as in use (shared ``format.lock``) until :func:`release`."""
    version = check(data_dir, steps)
    latest = current(steps)
    if version is None:
        try:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise FormatError(f"cannot create the data folder {data_dir}: {e.strerror}") from None
        _write(data_dir, latest)
    elif version < latest:
        release(data_dir)  # this process's own hold (a server built again in it)
        upgrade(data_dir, steps, backup_dir, vault_roots)
    elif not (data_dir / dataformat.FILE_NAME).exists():
        _write(data_dir, latest)  # a folder from before versioning: format 1
    key = data_dir.absolute()
    if key not in _serving:
        fd = _flock(data_dir, fcntl.LOCK_SH)
        if fd is None:
            raise FormatError(f"`ourmail upgrade` is upgrading {data_dir}: start after it")
        _serving[key] = fd
    _forget_finished(data_dir)
    return latest


def release(data_dir: Path) -> None:
    """The server on ``data_dir`` stopped: it no longer holds the folder."""
    fd = _serving.pop(data_dir.absolute(), None)
    if fd is not None:
        os.close(fd)


def _write(data_dir: Path, version: int) -> None:
    try:
        dataformat.write(data_dir, version)
    except OSError as e:
        raise FormatError(
            f"cannot record the data format in {data_dir / dataformat.FILE_NAME}: {e.strerror}"
        ) from None


def _flock(data_dir: Path, how: int) -> int | None:
    """A descriptor of ``format.lock`` flock-ed ``how``; None if another process holds it."""
    path = data_dir / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as e:
        raise FormatError(f"cannot open {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _forget_finished(data_dir: Path) -> None:
    """At the latest format: remove the marker of an upgrade that finished all its steps but
    stopped before removing it; else the next release's upgrade would take it for its own
    and skip its backup."""
    marker = data_dir / MARKER
    if marker.exists():
        marker.unlink(missing_ok=True)
        fsync_dir(data_dir)


def upgrade(
    data_dir: Path,
    steps: Sequence[Step] | None = None,
    backup_dir: Path | None = None,
    vault_roots: Sequence[Path] = (),
) -> list[str]:
    """Upgrade the (stopped) data folder to the registry's format; what was done, a line each.
    FormatError while a server uses the folder."""
    version = check(data_dir, steps) or current(steps)
    if version == current(steps):
        _forget_finished(data_dir)
        return []
    lock = _flock(data_dir, fcntl.LOCK_EX)
    if lock is None:
        raise FormatError(
            f"a running server (or another upgrade) uses {data_dir}: stop it "
            "(systemctl stop ourmail), then upgrade"
        )
    try:
        return _upgrade(data_dir, version, steps, backup_dir, vault_roots)
    finally:
        os.close(lock)


def _upgrade(
    data_dir: Path,
    version: int,
    steps: Sequence[Step] | None,
    backup_dir: Path | None,
    vault_roots: Sequence[Path],
) -> list[str]:
    done: list[str] = []
    marker = data_dir / MARKER
    if marker.exists():
        try:
            made = json.loads(marker.read_text("utf-8"))["backup"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FormatError(f"cannot read {marker} ({e}): remove it to upgrade again") from None
        done.append(f"an interrupted upgrade goes on; the backup before it is {made}")
    else:
        dest = backup_dir or default_backup_dir(data_dir)
        try:
            result = backup.run(data_dir, dest, vault_roots, current(steps))
        except (backup.BackupError, OSError) as e:
            raise FormatError(f"no upgrade: the backup before it failed: {e}") from None
        made = str(result.path)
        write_atomic(marker, json.dumps({"from": version, "backup": made}).encode(), 0o600)
        done.append(f"backed up the data folder (format {version}) to {made}")
        log.warn("backed up {data} to {path} before upgrading it", data=str(data_dir), path=made)
    for step in (STEPS if steps is None else steps)[version - 1 :]:
        step.apply(data_dir)
        dataformat.write(data_dir, step.to)
        done.append(f"format {step.to}: {step.what}")
        log.warn("upgraded {data} to format {to}: {what}", data=str(data_dir), to=step.to,
                 what=step.what)  # fmt: skip
    marker.unlink(missing_ok=True)
    fsync_dir(data_dir)
    return done
