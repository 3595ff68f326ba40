"""``ourmail list``: mailing lists (docs/lists.md#creating-and-running-lists).

The lists live in ``<data>/lists/lists.sqlite`` (WAL): the commands work with the server
stopped or running, and touch ``<data>/lists/changed`` after each change so that a running
server reads its table of lists again.  Every change is written to the audit log (made or
refused), as the other commands' are.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.interfaces import AccountRefused, Actor
from ourmail.lists import edit
from ourmail.lists.context import touch_changed
from ourmail.lists.listdb import ListDB
from ourmail.lists.model import Delivery, ListSettings, Member
from ourmail.manage import accountops
from ourmail.manage.audit import AuditFile, audited_change, unix_user

#: Most addresses one ``add`` or ``remove`` takes.
MAX_ARGS = 10_000


def list_db(settings: Settings) -> ListDB:
    """The lists' database of ``settings``' data directory."""
    (settings.data_dir / "lists").mkdir(parents=True, exist_ok=True)
    return ListDB(settings.data_dir / "lists" / "lists.sqlite")


def _audited(
    settings: Settings, action: str, target: str, work: Callable[[], str], detail: str = ""
) -> str:
    """``work`` (a change), its audit line, and the mark that tells a running server."""
    actor = Actor(unix_user(), "cli")
    done = audited_change(AuditFile(settings.data_dir), actor, action, target, work, detail)
    touch_changed(settings.data_dir / "lists")
    return done


def _normaliser(settings: Settings) -> Callable[[str], str]:
    def normalise(raw: str) -> str:
        try:
            return normalise_address(raw, settings.primary_domain)
        except AddressError as e:
            raise ValueError(str(e)) from None

    return normalise


def _address(settings: Settings, raw: str) -> str:
    try:
        return _normaliser(settings)(raw)
    except ValueError as e:
        raise AccountRefused("bad-address", str(e), raw) from None


def _existing(settings: Settings, db: ListDB, raw: str) -> ListSettings:
    found = db.get(_address(settings, raw))
    if found is None:
        raise AccountRefused("no-such-list", f"no such list: {raw}", raw)
    return found


def list_create(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    db = list_db(settings)

    def create() -> str:
        address = accountops.address(settings, accounts, args.address)
        given = {"owners": ",".join(args.owner), "name": args.name or "", "group": args.group or ""}
        edit.create(
            db,
            address,
            given,
            _normaliser(settings),
            functools.partial(accountops.in_use, accounts),
            time.time(),
        )
        return address

    detail = f"owners: {', '.join(args.owner)}"
    print(f"created the list {_audited(settings, 'list.create', args.address, create, detail)}")


def list_delete(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    db = list_db(settings)

    def delete() -> str:
        lst = _existing(settings, db, args.address)
        edit.delete(db, lst.address)
        return lst.address

    print(f"deleted the list {_audited(settings, 'list.delete', args.address, delete)}")


def list_ls(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    db = list_db(settings)
    for lst in db.lists():
        print(f"{lst.address}\t{lst.display_name}\t{db.count(lst.address)} member(s)")


def list_show(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    db = list_db(settings)
    lst = _existing(settings, db, args.address)
    print(lst.address)
    for key in edit.FIELDS:
        value = edit.value_of(lst, key)
        print(f"\t{key} = {value!r}" if key == "footer" else f"\t{key} = {value}")
    print(f"\tmembers: {db.count(lst.address)}")
    print(f"\theld posts: {len(db.held(lst.address))}")


def list_set(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    db = list_db(settings)
    changes: dict[str, str] = {}
    for pair in args.settings:
        key, eq, value = pair.partition("=")
        if not eq:
            raise AccountRefused("bad-setting", f"{pair!r}: give key=value")
        changes[key.strip()] = value

    def change() -> str:
        lst = _existing(settings, db, args.address)
        try:
            changed = edit.change(lst, changes, _normaliser(settings))
        except edit.BadSetting as e:
            raise AccountRefused("bad-setting", str(e), lst.address) from None
        db.update(changed)
        return lst.address

    detail = ", ".join(sorted(changes))
    done = _audited(settings, "list.set", args.address, change, detail)
    print(f"changed {detail} of {done}")


def list_members(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    db = list_db(settings)
    lst = _existing(settings, db, args.address)
    for m in db.members(lst.address):
        why = f" ({m.disabled_by})" if m.disabled_by else ""
        print(f"{m.address}\t{m.delivery.value}{why}\tbounce score {m.bounce_score:g}")
    if lst.group:
        print(f"and the members of the group {lst.group}")


def _addresses(settings: Settings, raw: list[str]) -> list[str]:
    if len(raw) > MAX_ARGS:
        raise AccountRefused("too-many", f"at most {MAX_ARGS} addresses at once")
    return list(dict.fromkeys(_address(settings, a) for a in raw))


def list_add(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    db = list_db(settings)
    added = [0]

    def add() -> str:
        lst = _existing(settings, db, args.address)
        now = time.time()
        members = [Member(a, subscribed=now) for a in _addresses(settings, args.members)]
        added[0] = db.subscribe(lst.address, members)
        return lst.address

    done = _audited(settings, "list.member-add", args.address, add, ", ".join(args.members))
    print(f"added {added[0]} member(s) to {done}")


def list_remove(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    db = list_db(settings)
    removed = [0]

    def remove() -> str:
        lst = _existing(settings, db, args.address)
        removed[0] = db.unsubscribe(lst.address, _addresses(settings, args.members))
        return lst.address

    done = _audited(settings, "list.member-remove", args.address, remove, ", ".join(args.members))
    print(f"removed {removed[0]} member(s) from {done}")


def list_mode(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    """How members get the posts: ``each`` one, a daily ``digest``, or ``none`` (kept as
    members, sent nothing; ``each`` or ``digest`` again re-enables a bounce-disabled one)."""
    db = list_db(settings)
    delivery = Delivery(args.mode)
    changed: list[str] = []

    def mode() -> str:
        lst = _existing(settings, db, args.address)
        if delivery is Delivery.DIGEST and not lst.digest:
            raise AccountRefused("no-digest", f"{lst.address} has no digest (digest=yes first)")
        for address in _addresses(settings, args.members):
            member = db.member(lst.address, address)
            if member is None:
                raise AccountRefused("no-member", f"{address} is not a member of {lst.address}")
            why = "owner" if delivery is Delivery.NONE else ""
            back = attrs.evolve(member, delivery=delivery, disabled_by=why, bounce_score=0.0)
            db.set_member(lst.address, back)
            changed.append(address)
        return lst.address

    detail = f"{args.mode}: {', '.join(args.members)}"
    done = _audited(settings, "list.member-mode", args.address, mode, detail)
    print(f"{len(changed)} member(s) of {done} now get {delivery.value}")


def list_held(settings: Settings, accounts: AccountDB, args: argparse.Namespace) -> None:
    db = list_db(settings)
    lst = _existing(settings, db, args.address)
    for h in db.held(lst.address):
        when = datetime.fromtimestamp(h.held, UTC).strftime("%Y-%m-%d %H:%M")
        print(f"{h.id}\t{when}\t{h.sender}\t{h.size}\t{h.reason}\t{h.subject}")


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``list`` topic and its commands."""
    topic = topics.add_parser("list", parents=[common], help="mailing lists")
    cmds = topic.add_subparsers(dest="command", required=True)
    p = cmds.add_parser("create", parents=[common], help="create a mailing list")
    p.add_argument("address", help="LIST@DOMAIN, in a domain served here")
    p.add_argument("--owner", action="append", required=True, help="an owner (repeat for more)")
    p.add_argument("--name", help="the list's short name")
    p.add_argument("--group", help="a group whose members are members of the list too")
    p.set_defaults(func=list_create)
    p = cmds.add_parser("delete", parents=[common], help="delete a list and its members")
    p.add_argument("address")
    p.set_defaults(func=list_delete)
    p = cmds.add_parser("ls", parents=[common], help="the lists")
    p.set_defaults(func=list_ls)
    p = cmds.add_parser("show", parents=[common], help="a list's settings, members, held posts")
    p.add_argument("address")
    p.set_defaults(func=list_show)
    p = cmds.add_parser("set", parents=[common], help="change a list's settings")
    p.add_argument("address")
    p.add_argument("settings", nargs="+", metavar="key=value", help=", ".join(edit.FIELDS))
    p.set_defaults(func=list_set)
    p = cmds.add_parser("members", parents=[common], help="a list's subscribers")
    p.add_argument("address")
    p.set_defaults(func=list_members)
    p = cmds.add_parser("add", parents=[common], help="subscribe addresses (no confirmation)")
    p.add_argument("address")
    p.add_argument("members", nargs="+")
    p.set_defaults(func=list_add)
    p = cmds.add_parser("remove", parents=[common], help="unsubscribe addresses")
    p.add_argument("address")
    p.add_argument("members", nargs="+")
    p.set_defaults(func=list_remove)
    p = cmds.add_parser("mode", parents=[common], help="how members get the posts")
    p.add_argument("address")
    p.add_argument("mode", choices=[d.value for d in Delivery], help="each, digest or none")
    p.add_argument("members", nargs="+")
    p.set_defaults(func=list_mode)
    p = cmds.add_parser("held", parents=[common], help="a list's posts held for moderation")
    p.add_argument("address")
    p.set_defaults(func=list_held)
