"""``ourmail`` admin commands: users and domains.

Every command takes ``--data DIR`` (and ``--config FILE``) like the server.  Changes are written
to ``<data>/accounts.json`` atomically under a lock; a running server sees them at its next lookup.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from ourmail.admin import (
    backupcmd,
    certcmd,
    disablecmd,
    dkimcmd,
    dnscmd,
    filterscmd,
    groupcmd,
    ldapcmd,
    listcmd,
    logcmd,
    queuecmd,
    spamcmd,
    transfer,
    vaultcmd,
    vaultindexcmd,
    vaultrulescmd,
)
from ourmail.auth.accounts import AccountDB, AccountError
from ourmail.backup import upgrade
from ourmail.config import (
    POP3_DELETE_POLICIES,
    ConfigError,
    QuotaLimit,
    Settings,
    load_settings,
    parse_size,
)
from ourmail.interfaces import AccountRefused, Actor
from ourmail.manage import accountops as ops
from ourmail.manage import domainops
from ourmail.manage.audit import AuditFile, unix_user
from ourmail.pop3.policy import deletion_policy
from ourmail.queue.files import QueueError, QueueFiles
from ourmail.secure.dkimkeys import KeyError_
from ourmail.store import shardmove
from ourmail.store.quota import QuotaPolicy, usage
from ourmail.store.userstore import MaildirStore, ensure_default_folders

T = TypeVar("T")
MIN_PASSWORD = ops.MIN_PASSWORD


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit status 1."""


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the passwords do not match")
    else:
        raise CommandError("no terminal to ask for a password: use --password-stdin")
    ops.check_password(password)
    return password


def _address(settings: Settings, db: AccountDB, raw: str) -> str:
    """A full address; a bare local part is in the primary domain, as at login."""
    return ops.address(settings, db, raw)


def _audited(
    settings: Settings,
    action: str,
    target: str,
    work: Callable[[], T],
    detail: str | Callable[[], str] = "",
) -> T:
    """``work``, then its line in the audit log (docs/admin-console.md#the-audit-log);
    a callable ``detail`` is asked once ``work`` is done (what it changed)."""
    audit, actor = AuditFile(settings.data_dir), Actor(unix_user(), "cli")
    try:
        done = work()
    except AccountRefused as e:
        audit.record(actor, action, e.subject or target, f"refused: {e.code}", _text(detail))
        raise
    except (CommandError, AccountError, ConfigError):
        audit.record(actor, action, target, "refused", _text(detail))
        raise
    audit.record(actor, action, done if isinstance(done, str) else target, "ok", _text(detail))
    return done


def _text(detail: str | Callable[[], str]) -> str:
    return detail if isinstance(detail, str) else detail()


def user_add(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    def add() -> str:
        address = _address(settings, db, args.address)
        if db.has_user(address):
            raise AccountRefused("exists", f"{address} already exists", address)
        return ops.add_user(settings, db, address, _read_password(args))

    print(f"added {_audited(settings, 'user.add', args.address, add)}")


def user_list(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    for address in db.users():
        print(address)


def user_passwd(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    def change() -> str:
        address = ops.existing_user(settings, db, args.address)
        return ops.set_password(settings, db, address, _read_password(args))

    print(f"changed the password of {_audited(settings, 'user.passwd', args.address, change)}")


def user_del(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    where: list[Path] = []
    left: list[str] = []

    def delete() -> str:
        address, kept, groups = ops.delete_user(settings, db, args.address)
        where.append(kept)
        left.extend(groups)
        return address

    address = _audited(
        settings, "user.del", args.address, delete, lambda: ops.left_groups_detail(left)
    )
    print(f"deleted {address}; its mail is kept in {where[0]}")
    if left:
        print(f"removed from groups: {', '.join(left)}")


def user_quota(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    address = ops.existing_user(settings, db, args.address)
    if args.default or args.bytes is not None or args.messages is not None:
        current = db.quota(address) or QuotaLimit()
        limit = None if args.default else QuotaLimit(
            bytes=current.bytes if args.bytes is None else args.bytes or None,
            messages=current.messages if args.messages is None else args.messages or None,
        )  # fmt: skip
        _audited(
            settings,
            "user.quota",
            address,
            lambda: ops.set_quota(settings, db, address, limit),
            ops.quota_detail(limit),
        )
    policy = QuotaPolicy(settings.quota, db)
    limit = policy.limit(address)
    used = usage(MaildirStore(settings.data_dir).user(address))
    source = "own" if db.quota(address) is not None else "domain or default"
    print(f"{address}: {_size(used.bytes)} in {used.messages} messages; limit "
          f"{_size(limit.bytes) if limit.bytes else 'unlimited'} and "
          f"{limit.messages or 'unlimited'} messages ({source})")  # fmt: skip


def user_pop3_delete(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    address = _address(settings, db, args.address)
    if not db.has_user(address):
        raise CommandError(f"no such user: {address}")
    if args.policy is not None:
        policy = None if args.policy == "default" else args.policy
        _audited(
            settings,
            "user.pop3-delete",
            address,
            lambda: db.set_pop3_delete(address, policy),
            args.policy,
        )
    own = db.pop3_delete(address)
    policy = deletion_policy(settings.pop3, db, address)
    print(f"{address}: POP3 deletion {policy} ({'own' if own else 'domain or default'})")


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def _existing_user(settings: Settings, db: AccountDB, raw: str) -> str:
    address = _address(settings, db, raw)
    if not db.has_user(address):
        raise CommandError(f"no such user: {address} (add it first with `ourmail user add`)")
    return address


def _run_on_reactor(work: Callable[[], Deferred[T]]) -> T:
    """Run ``work`` with the reactor running (the store commits through it); its result."""
    from twisted.internet import reactor

    outcome: list[Any] = []

    def start() -> None:
        d = maybeDeferred(work)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def import_cmd(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    address = _existing_user(settings, db, args.user)
    source = Path(args.path)
    if not (source / "cur").is_dir():
        raise CommandError(f"{source} is not a Maildir (it has no cur/ directory)")
    user = MaildirStore(settings.data_dir).user(address)
    ensure_default_folders(user)
    count = _run_on_reactor(lambda: transfer.import_maildir(user, source))
    print(f"imported {count} messages into {address}")


def export_cmd(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    address = _existing_user(settings, db, args.user)
    dest = Path(args.dest)
    if dest.exists() and any(dest.iterdir()):
        raise CommandError(f"{dest} is not empty")
    user = MaildirStore(settings.data_dir).user(address)
    export = transfer.export_maildir if args.format == "maildir" else transfer.export_mbox
    print(f"exported {export(user, dest)} messages of {address} to {dest} ({args.format})")


def shard_list(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    for r in shardmove.report(settings.data_dir):
        shards = shardmove.ranges_text(r.shards)
        print(f"{r.root}\tshards {shards}\t{r.users} users\t{_size(r.bytes)}")


def shard_move(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    first, last = shardmove.parse_range(args.range)
    try:
        moved = shardmove.move(settings.data_dir, first, last, args.to)
    except shardmove.MoveError as e:
        raise CommandError(str(e)) from None
    print(f"moved shards {first:02x}-{last:02x} ({moved} users) to {args.to}")


def alias_add(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    def add() -> str:
        address, targets = ops.set_alias(settings, db, args.address, args.targets)
        shown.extend(targets)
        return address

    shown: list[str] = []
    address = _audited(settings, "alias.add", args.address, add, ", ".join(args.targets))
    print(f"{address} -> {', '.join(shown)}")


def alias_list(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    for address, targets in sorted(db.aliases().items()):
        print(f"{address}\t{', '.join(targets)}")


def alias_del(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    _audited(
        settings, "alias.del", args.address, lambda: ops.delete_alias(settings, db, args.address)
    )
    print(f"deleted the alias {args.address.lower()}")


def domain_add(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    def add() -> str:
        return domainops.add_domain(settings, db, args.name)

    print(f"added {_audited(settings, 'domain.add', args.name, add)}")


def domain_list(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    for domain in settings.domains:
        print(
            f"{domain}\t(configuration{', primary' if domain == settings.primary_domain else ''})"
        )
    for domain in db.domains():
        if domain not in settings.domains:
            print(f"{domain}\t(added)")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=argparse.SUPPRESS, help="data directory (./ourmail-data)")
    common.add_argument("--config", default=argparse.SUPPRESS, help="configuration file")
    parser = argparse.ArgumentParser(
        prog="ourmail",
        parents=[common],
        description="Manage an ourmail server's users, domains, mail store and queue.",
    )
    topics = parser.add_subparsers(dest="topic", required=True)

    user = topics.add_parser("user", parents=[common], help="local user accounts")
    user_cmds = user.add_subparsers(dest="command", required=True)
    for name, func, help_ in (
        ("add", user_add, "add a user"),
        ("passwd", user_passwd, "set a user's password"),
    ):
        p = user_cmds.add_parser(name, parents=[common], help=help_)
        p.add_argument("address")
        p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        p.set_defaults(func=func)
    p = user_cmds.add_parser("list", parents=[common], help="list users")
    p.set_defaults(func=user_list)
    p = user_cmds.add_parser("quota", parents=[common], help="show or set a user's quota")
    p.add_argument("address")
    p.add_argument("--bytes", type=parse_size, help="limit, e.g. 500M or 10G (0: unlimited)")
    p.add_argument("--messages", type=int, help="most messages (0: unlimited)")
    p.add_argument("--default", action="store_true", help="use the domain's or default limit")
    p.set_defaults(func=user_quota)
    p = user_cmds.add_parser(
        "pop3-delete", parents=[common], help="show or set what a POP3 deletion does for a user"
    )
    p.add_argument("address")
    p.add_argument("policy", nargs="?", choices=[*POP3_DELETE_POLICIES, "default"])
    p.set_defaults(func=user_pop3_delete)
    p = user_cmds.add_parser("del", parents=[common], help="delete a user (the mail is kept)")
    p.add_argument("address")
    p.set_defaults(func=user_del)
    spamcmd.add_parser(user_cmds, common)
    groupcmd.add_user_parser(user_cmds, common)
    disablecmd.add_parser(user_cmds, common)

    alias = topics.add_parser(
        "alias", parents=[common], help="addresses that deliver to users or forward elsewhere"
    )
    alias_cmds = alias.add_subparsers(dest="command", required=True)
    p = alias_cmds.add_parser("add", parents=[common], help="add or replace an alias")
    p.add_argument("address", help="the alias, or @domain for that domain's catch-all")
    p.add_argument(
        "targets",
        nargs="+",
        help="local users who receive its mail, or addresses elsewhere to forward to",
    )
    p.set_defaults(func=alias_add)
    p = alias_cmds.add_parser("list", parents=[common], help="list aliases")
    p.set_defaults(func=alias_list)
    p = alias_cmds.add_parser("del", parents=[common], help="delete an alias")
    p.add_argument("address")
    p.set_defaults(func=alias_del)

    shard = topics.add_parser("shard", parents=[common], help="where users' mail is stored")
    shard_cmds = shard.add_subparsers(dest="command", required=True)
    p = shard_cmds.add_parser("list", parents=[common], help="roots, their shards, users, bytes")
    p.set_defaults(func=shard_list)
    p = shard_cmds.add_parser(
        "move", parents=[common], help="move shards to another root, safely, while running"
    )
    p.add_argument("range", help="hex shard range, e.g. 00-7f")
    p.add_argument("--to", required=True, help="the new root (relative: under the data dir)")
    p.set_defaults(func=shard_move)

    p = topics.add_parser("import", parents=[common], help="import mail")
    p.add_argument("kind", choices=["maildir"], help="the source format")
    p.add_argument("path", help="a Dovecot or Courier Maildir (Maildir++)")
    p.add_argument("--user", required=True, help="the (existing) account to import into")
    p.set_defaults(func=import_cmd)
    p = topics.add_parser("export", parents=[common], help="export a user's mail")
    p.add_argument("--user", required=True)
    p.add_argument("--format", choices=["maildir", "mbox"], default="maildir")
    p.add_argument("dest", help="an empty or new directory")
    p.set_defaults(func=export_cmd)

    domain = topics.add_parser("domain", parents=[common], help="mail domains")
    domain_cmds = domain.add_subparsers(dest="command", required=True)
    p = domain_cmds.add_parser("add", parents=[common], help="serve another domain")
    p.add_argument("name")
    p.set_defaults(func=domain_add)
    p = domain_cmds.add_parser("list", parents=[common], help="list the domains served")
    p.set_defaults(func=domain_list)

    queuecmd.add_parser(topics, common)
    ldapcmd.add_parser(topics, common)
    filterscmd.add_parser(topics, common)
    logcmd.add_parser(topics, common)
    dkimcmd.add_parser(topics, common)
    dnscmd.add_parser(topics, common)
    certcmd.add_parser(topics, common)
    groupcmd.add_parser(topics, common)
    listcmd.add_parser(topics, common)
    vaultcmd.add_parser(topics, common)
    backupcmd.add_parser(topics, common)
    return parser


def queue_cmd(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    files = QueueFiles(settings.data_dir / "queue")
    files.prepare()
    args.queue_func(files, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(
            data=getattr(args, "data", None), config=getattr(args, "config", None)
        )
        if args.topic not in backupcmd.ANY_FORMAT:
            upgrade.check_cli(settings.data_dir)
        func = queue_cmd if args.topic == "queue" else args.func
        func(settings, AccountDB(settings.data_dir), args)
    except (
        CommandError,
        ConfigError,
        AccountError,
        AccountRefused,
        shardmove.MoveError,
        QueueError,
        KeyError_,
        logcmd.BadSince,
        dnscmd.DNSCommandError,
        vaultrulescmd.VaultRefused,
        vaultindexcmd.VaultSearchError,
        backupcmd.BackupCommandError,
    ) as e:
        print(f"ourmail: {e}", file=sys.stderr)
        return 1
    return 0
