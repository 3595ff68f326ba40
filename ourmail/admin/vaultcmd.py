"""``ourmail vault``: the vault's commands (docs/vault.md).

Each part of the vault adds its own commands under the one ``vault`` topic.
"""

from __future__ import annotations

import argparse
from typing import Any

from ourmail.admin import vaultrulescmd


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``vault`` topic and its commands (they set ``func``)."""
    vault = topics.add_parser("vault", parents=[common], help="the vault: every message kept")
    sub = vault.add_subparsers(dest="vault_command", required=True)
    vaultrulescmd.add_commands(sub)
