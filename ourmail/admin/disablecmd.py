"""``ourmail user disable|enable|disabled``: lock an account out without deleting it
(docs/admin-console.md#disabled-accounts).

A disabled account cannot log in (IMAP, POP3, SMTP AUTH, webmail); the running server ends its
open sessions within about a second (``ourmail/auth/revocation.py`` notices the accounts file's
change), and mail to it is still accepted.  Both commands are audit-logged."""

from __future__ import annotations

import argparse
from typing import Any

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.manage import accountops as ops


def add_parser(user_cmds: Any, common: argparse.ArgumentParser) -> None:
    p = user_cmds.add_parser(
        "disable",
        parents=[common],
        help="stop a user from logging in and end their open sessions (mail is still accepted)",
    )
    p.add_argument("address")
    p.add_argument("--reason", default="", help="why (kept with the account, shown to admins)")
    p.set_defaults(func=disable)
    p = user_cmds.add_parser("enable", parents=[common], help="let a disabled user log in again")
    p.add_argument("address")
    p.set_defaults(func=enable)
    p = user_cmds.add_parser("disabled", parents=[common], help="list the disabled users")
    p.set_defaults(func=listing)


def disable(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    from ourmail.admin.cli import _audited

    def change() -> str:
        return ops.disable_user(settings, db, args.address, args.reason)

    address = _audited(settings, "user.disable", args.address, change, args.reason)
    print(f"disabled {address}; its open sessions end within seconds")


def enable(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    from ourmail.admin.cli import _audited

    def change() -> str:
        return ops.enable_user(settings, db, args.address)

    print(f"enabled {_audited(settings, 'user.enable', args.address, change)}")


def listing(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    for address in db.users():
        state = db.disabled(address)
        if state is not None:
            reason = state.get("reason", "")
            print(f"{address}\tsince {state.get('since', '?')}" + (f"\t{reason}" if reason else ""))
