"""``ourmail group``: local groups (an address whose mail reaches every member once), and
``ourmail user forward``: a user's forwarding (docs/admin.md, docs/admin-console.md#groups).

Every change goes through :mod:`ourmail.manage.groupops`, as the admin console's do, and is
written to the audit log (made or refused).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.interfaces import AccountRefused, Actor
from ourmail.manage import accountops, groupops
from ourmail.manage.audit import AuditFile, unix_user


def _audited(
    settings: Settings, action: str, target: str, work: Callable[[], str], detail: str = ""
) -> str:
    """``work``, then its line in the audit log (docs/admin-console.md#the-audit-log)."""
    audit, actor = AuditFile(settings.data_dir), Actor(unix_user(), "cli")
    try:
        done = work()
    except AccountRefused as e:
        audit.record(actor, action, e.subject or target, f"refused: {e.code}", detail)
        raise
    audit.record(actor, action, done, "ok", detail)
    return done


def group_add(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    def add() -> str:
        return groupops.add_group(settings, db, args.address, args.name or "", args.members)

    detail = ", ".join(args.members)
    print(f"added the group {_audited(settings, 'group.add', args.address, add, detail)}")


def group_del(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    def delete() -> str:
        return groupops.delete_group(settings, db, args.address)

    print(f"deleted the group {_audited(settings, 'group.del', args.address, delete)}")


def group_list(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    for address, (name, members) in sorted(db.groups().items()):
        if args.domain is None or address.rpartition("@")[2] == args.domain.lower():
            print(f"{address}\t{name}\t{len(members)} member{'s' if len(members) != 1 else ''}")


def group_show(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    found = groupops.existing_group(settings, db, args.address)
    group = db.group(found)
    name, members = group if group else ("", [])
    print(f"{found}\t{name}")
    for member in members:
        print(f"\t{member}")


def group_member_add(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    def add() -> str:
        return groupops.add_members(settings, db, args.address, args.members)

    done = _audited(settings, "group.member-add", args.address, add, ", ".join(args.members))
    print(f"added {len(args.members)} member(s) to {done}")


def group_member_del(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    def remove() -> str:
        return groupops.remove_members(settings, db, args.address, args.members)

    done = _audited(settings, "group.member-del", args.address, remove, ", ".join(args.members))
    print(f"removed {len(args.members)} member(s) from {done}")


def user_forward(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    """Show, set or stop a user's forwarding."""
    if not args.to and not args.off and args.keep is None:
        found = accountops.existing_user(settings, db, args.address)
        forward = db.forward(found)
        if forward is None:
            print(f"{found}: no forwarding")
        else:
            kept = "a copy kept" if forward[1] else "no copy kept"
            print(f"{found}: forwarded to {', '.join(forward[0])} ({kept})")
        return
    if args.off and args.to:
        raise AccountRefused("bad-target", "--off takes no --to")
    targets = None if args.off else args.to
    if targets is None and not args.off:
        # --keep/--no-keep alone: change the copy setting of the forwarding there is.
        current = db.forward(accountops.existing_user(settings, db, args.address))
        if current is None:
            raise AccountRefused("no-targets", "forwarding needs at least one --to address")
        targets = current[0]
    keep = True if args.keep is None else args.keep

    def change() -> str:
        return groupops.set_forward(settings, db, args.address, targets, keep)

    detail = groupops.forward_detail(targets, keep)
    found = _audited(settings, "user.forward", args.address, change, detail)
    print(f"{found}: {'no forwarding' if targets is None else detail}")


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``group`` topic and its commands."""
    group = topics.add_parser(
        "group", parents=[common], help="local groups: one address, mail to every member"
    )
    cmds = group.add_subparsers(dest="command", required=True)
    p = cmds.add_parser("add", parents=[common], help="create a group")
    p.add_argument("address")
    p.add_argument("members", nargs="*", help="users, groups, aliases or addresses elsewhere")
    p.add_argument("--name", help="the group's display name")
    p.set_defaults(func=group_add)
    p = cmds.add_parser("del", parents=[common], help="delete a group")
    p.add_argument("address")
    p.set_defaults(func=group_del)
    p = cmds.add_parser("list", parents=[common], help="list groups")
    p.add_argument("domain", nargs="?")
    p.set_defaults(func=group_list)
    p = cmds.add_parser("show", parents=[common], help="a group's name and members")
    p.add_argument("address")
    p.set_defaults(func=group_show)
    p = cmds.add_parser("member-add", parents=[common], help="add members to a group")
    p.add_argument("address")
    p.add_argument("members", nargs="+")
    p.set_defaults(func=group_member_add)
    p = cmds.add_parser("member-del", parents=[common], help="remove members from a group")
    p.add_argument("address")
    p.add_argument("members", nargs="+")
    p.set_defaults(func=group_member_del)


def add_user_parser(user_cmds: Any, common: argparse.ArgumentParser) -> None:
    """``ourmail user forward``."""
    p = user_cmds.add_parser(
        "forward", parents=[common], help="show or set where a user's mail is forwarded"
    )
    p.add_argument("address")
    p.add_argument("--to", action="append", default=[], help="an address (repeat for more)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep", dest="keep", action="store_true", default=None,
                      help="keep a copy in the mailbox (the default)")  # fmt: skip
    keep.add_argument("--no-keep", dest="keep", action="store_false",
                      help="keep no copy")  # fmt: skip
    p.add_argument("--off", action="store_true", help="stop forwarding")
    p.set_defaults(func=user_forward)
