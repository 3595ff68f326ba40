"""The data folder's format version: ``<data>/format`` holds one number.

A data folder made before versioning (no ``format`` file, but an ``accounts.json``) is
version 1; a new data folder gets :data:`CURRENT` at its first start.  Upgrades from one
version to the next are the steps of upgrade.py.
"""

from __future__ import annotations

from pathlib import Path

from ourmail.backup.manifest import DATA, KIND
from ourmail.backup.manifest import FILE_NAME as MANIFEST
from ourmail.config import ConfigError
from ourmail.fsutil import write_atomic

FILE_NAME = "format"
#: Left in a data folder by a restore that did not finish (restore.py).
RESTORE_INCOMPLETE = "restore.incomplete"
#: The format this ourmail writes: 1 + the number of upgrade steps (upgrade.STEPS).
CURRENT = 1


class FormatError(ConfigError):
    """A data folder this ourmail cannot use as it is (one line, exit status 1)."""


def read(data_dir: Path) -> int | None:
    """The data folder's version; None for a new (or not yet started) data folder.  A
    snapshot's ``data/`` is refused: its files are hard links shared with the other
    snapshots, so a server or command writing there would change them all."""
    if data_dir.name == DATA and _is_snapshot(data_dir.parent):
        raise FormatError(
            f"{data_dir} is a backup snapshot's copy, which other snapshots share: restore it "
            f"(ourmail restore {data_dir.parent} NEW_FOLDER) and use the new folder"
        )
    if (data_dir / RESTORE_INCOMPLETE).exists():
        raise FormatError(
            f"a restore into {data_dir} did not finish: empty it and run `ourmail restore` again"
        )
    path = data_dir / FILE_NAME
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        return 1 if (data_dir / "accounts.json").exists() else None
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"cannot read {path}: {e}") from None
    if not text.isdigit() or int(text) < 1:
        raise FormatError(
            f"{path} should hold the data format version, a number; it holds {text!r}"
        )
    return int(text)


def _is_snapshot(folder: Path) -> bool:
    try:
        with open(folder / MANIFEST, "rb") as f:
            return f'"{KIND}"'.encode() in f.read(200)
    except OSError:
        return False


def write(data_dir: Path, version: int) -> None:
    """Record ``version`` (atomically: a crash leaves the old number or the new)."""
    write_atomic(data_dir / FILE_NAME, f"{version}\n".encode("ascii"), 0o644)


def too_new(data_dir: Path, version: int, current: int = CURRENT) -> str:
    """The one line that refuses a data folder of a newer format."""
    return (
        f"the data folder {data_dir} is in format {version}, newer than this ourmail "
        f"understands (format {current}): run the newer ourmail that wrote it, or restore a "
        "backup made before the upgrade (docs/deploy.md#upgrades)"
    )
