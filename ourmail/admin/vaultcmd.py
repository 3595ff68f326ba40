"""``ourmail vault``: the vault's commands (docs/vault.md).  Each part of the vault adds its
own sub-commands with ``add_commands(sub)``."""

from __future__ import annotations

import argparse
from typing import Any

from ourmail.admin import vaultindexcmd


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``vault`` topic and its commands (they set ``func``)."""
    vault = topics.add_parser("vault", parents=[common], help="the vault: all mail, kept")
    sub = vault.add_subparsers(dest="command", required=True)
    vaultindexcmd.add_commands(sub)
