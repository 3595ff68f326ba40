"""``ourmail backup``, ``ourmail restore`` and ``ourmail upgrade`` (docs/deploy.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ourmail.backup import backup, dataformat, restore, upgrade
from ourmail.config import Settings

#: Topics that work on a data folder of any format (the others refuse one not upgraded).
ANY_FORMAT = ("backup", "restore", "upgrade")


class BackupCommandError(Exception):
    """A backup, restore or upgrade that cannot be done (one line, exit status 1)."""


def backup_cmd(settings: Settings, db: Any, args: argparse.Namespace) -> None:
    try:
        result = backup.run(
            settings.data_dir,
            Path(args.dest),
            settings.vault.roots,
            verify_vault=not args.no_vault_verify,
        )
    except (backup.BackupError, OSError) as e:
        raise BackupCommandError(f"backup failed: {e}") from None
    print(result.summary())
    if not result.vault_ok:
        raise BackupCommandError(
            "backup made, but its vault copy does not verify: run `ourmail vault verify` on "
            "the data folder (docs/vault.md)"
        )


def restore_cmd(settings: Settings, db: Any, args: argparse.Namespace) -> None:
    try:
        roots = [restore.ShardRoot.parse(text) for text in args.shard_root]
        done = restore.restore(Path(args.snapshot), Path(args.data_dir), roots)
    except (restore.RestoreError, OSError) as e:
        raise BackupCommandError(f"restore refused: {e}") from None
    print(done.summary(Path(args.data_dir)))


def upgrade_cmd(settings: Settings, db: Any, args: argparse.Namespace) -> None:
    if dataformat.read(settings.data_dir) is None:
        raise BackupCommandError(f"{settings.data_dir} is not an ourmail data folder (--data?)")
    backup_dir = Path(args.backup) if args.backup else None
    done = upgrade.upgrade(settings.data_dir, backup_dir=backup_dir,
                           vault_roots=settings.vault.roots)  # fmt: skip
    for line in done or [f"{settings.data_dir} is in this ourmail's format already"]:
        print(line)


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``backup``, ``restore`` and ``upgrade`` commands."""
    p = topics.add_parser(
        "backup", parents=[common], help="a consistent snapshot of the data folder, while running"
    )
    p.add_argument("dest", help="the backup folder: each run adds DEST/<UTC time>/")
    p.add_argument(
        "--no-vault-verify",
        action="store_true",
        help="do not check the copied vault chain (it reads the whole copy)",
    )
    p.set_defaults(func=backup_cmd)
    p = topics.add_parser("restore", parents=[common], help="a snapshot into a new data folder")
    p.add_argument("snapshot", help="a snapshot folder, DEST/<UTC time>")
    p.add_argument("data_dir", help="the new data folder (absent or empty)")
    p.add_argument(
        "--shard-root",
        action="append",
        default=[],
        metavar="RANGE=PATH",
        help="put shards RANGE (hex, e.g. 80-ff) in PATH instead of DATA_DIR/mail (repeatable)",
    )
    p.set_defaults(func=restore_cmd)
    p = topics.add_parser(
        "upgrade", parents=[common], help="upgrade the stopped data folder's format (backup first)"
    )
    p.add_argument("--backup", help="the backup folder (default: <data>/pre-upgrade)")
    p.set_defaults(func=upgrade_cmd)
