"""``ourmail user spam ...``: a user's spam thresholds, allow and block lists, and contacts
(the spam check's database, ``<data>/filters/spam/spam.sqlite``; docs/filters.md).

The running server sees a change with the next message: the check reads the database for
every message, and SQLite's WAL lets this command write while the server reads."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.filters.spam import prefs_for
from ourmail.filters.spamprefs import OFF


def add_parser(user_cmds: Any, common: argparse.ArgumentParser) -> None:
    spam = user_cmds.add_parser(
        "spam", parents=[common], help="a user's spam thresholds, allow and block lists"
    )
    cmds = spam.add_subparsers(dest="spam_command", required=True)
    for name, help_ in (
        ("allow", "never file mail from ADDRESS or @DOMAIN into Junk by score"),
        ("block", "file mail from ADDRESS or @DOMAIN into Junk"),
        ("unlist", "take ADDRESS or @DOMAIN off the user's lists"),
    ):
        p = cmds.add_parser(name, parents=[common], help=help_)
        p.add_argument("user")
        p.add_argument("entry", metavar="ADDRESS-OR-@DOMAIN")
        p.set_defaults(func=change_list, kind=name)
    p = cmds.add_parser("show", parents=[common], help="the user's thresholds, lists, contacts")
    p.add_argument("user")
    p.add_argument("--contacts", action="store_true", help="also list every contact")
    p.set_defaults(func=show)
    p = cmds.add_parser("threshold", parents=[common], help="set the user's spam thresholds")
    p.add_argument("user")
    p.add_argument("--junk", help="score from which mail goes to Junk ('default': the domain's)")
    p.add_argument("--reject", help="score from which mail is refused ('off', 'default')")
    p.set_defaults(func=threshold)


def _user(settings: Settings, db: AccountDB, raw: str) -> str:
    from ourmail.admin.cli import _address

    return _address(settings, db, raw)


def _score(raw: str | None, what: str, allow_off: bool) -> float | None:
    from ourmail.admin.cli import CommandError

    if raw is None or raw == "default":
        return None
    if raw == "off" and allow_off:
        return OFF
    try:
        value = float(raw)
    except ValueError:
        words = "a number, 'off' or 'default'" if allow_off else "a number or 'default'"
        raise CommandError(f"--{what} must be {words}") from None
    if not math.isfinite(value):
        raise CommandError(f"--{what} must be a finite number")
    return value


def change_list(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    from ourmail.admin.cli import CommandError

    user = _user(settings, db, args.user)
    prefs = prefs_for(settings.data_dir)
    try:
        if args.kind == "unlist":
            if not prefs.remove_entry(user, args.entry):
                raise CommandError(f"{args.entry} is on no list of {user}")
            print(f"{args.entry.lower()} taken off the lists of {user}")
            return
        entry = prefs.add_entry(user, args.entry, args.kind)
    except ValueError as e:
        raise CommandError(f"{e} (give an address or @domain)") from None
    print(f"{entry} is on the {args.kind} list of {user}")


def threshold(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    from ourmail.admin.cli import CommandError

    user = _user(settings, db, args.user)
    prefs = prefs_for(settings.data_dir)
    if args.junk is None and args.reject is None:
        raise CommandError("give --junk and/or --reject")
    old_junk, old_reject = prefs.thresholds(user)
    junk = _score(args.junk, "junk", False) if args.junk is not None else old_junk
    reject = _score(args.reject, "reject", True) if args.reject is not None else old_reject
    if junk is not None and reject is not None and reject < junk:
        raise CommandError("--reject must not be below --junk")
    prefs.set_thresholds(user, junk, reject)
    print(f"{user}: {_describe(junk, reject)}")


def _describe(junk: float | None, reject: float | None) -> str:
    junk_text = f"Junk from {junk:g}" if junk is not None else "Junk: domain default"
    if reject is None:
        reject_text = "refuse: domain default"
    elif reject == OFF:
        reject_text = "never refuse"
    else:
        reject_text = f"refuse from {reject:g}"
    return f"{junk_text}; {reject_text}"


def show(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    user = _user(settings, db, args.user)
    prefs = prefs_for(settings.data_dir)
    junk, reject = prefs.thresholds(user)
    print(f"{user}: {_describe(junk, reject)}")
    entries = prefs.entries(user)
    for kind in ("allow", "block"):
        listed = [e for e, k in entries if k == kind]
        print(f"{kind}: {', '.join(listed) if listed else '(none)'}")
    contacts = prefs.contacts(user)
    print(f"contacts: {len(contacts)} (addresses the user has sent mail to)")
    if args.contacts:
        for address in contacts:
            print(f"  {address}")
