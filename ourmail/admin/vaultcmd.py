"""``ourmail vault``: the vault's commands (docs/vault.md).  Each part of the vault adds its
own sub-commands from its own module (``add_commands``)."""

from __future__ import annotations

import argparse
from typing import Any

from ourmail.admin import vaultproofcmd


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``vault`` topic and its commands."""
    vault = topics.add_parser("vault", parents=[common], help="the vault: every message kept")
    sub = vault.add_subparsers(dest="command", required=True)
    vaultproofcmd.add_commands(sub)
