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
4. the marker removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from twisted.logger import Logger

from ourmail.backup import backup, dataformat
from ourmail.backup.dataformat import FormatError
from ourmail.fsutil import fsync_dir, write_atomic

MARKER = "format.upgrading"
log = Logger()


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
    older one (a backup first), refuse a newer one (FormatError).  The version now."""
    version = check(data_dir, steps)
    latest = current(steps)
    if version is None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        dataformat.write(data_dir, latest)
        return latest
    if version < latest:
        upgrade(data_dir, steps, backup_dir, vault_roots)
    elif not (data_dir / dataformat.FILE_NAME).exists():
        dataformat.write(data_dir, latest)  # a folder from before versioning: format 1
    return latest


def upgrade(
    data_dir: Path,
    steps: Sequence[Step] | None = None,
    backup_dir: Path | None = None,
    vault_roots: Sequence[Path] = (),
) -> list[str]:
    """Upgrade the (stopped) data folder to the registry's format; what was done, a line each."""
    version = check(data_dir, steps) or current(steps)
    done: list[str] = []
    if version == current(steps):
        return done
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
    marker.unlink()
    fsync_dir(data_dir)
    return done
