"""``ourmail vault rule|hold|holds|expire|restore``: retention, legal holds and restore
(docs/vault.md#retention-and-legal-hold, docs/vault.md#restore).

The commands work on ``<data>/vault`` for whoever can read it (mode 0700, the server's Unix
user).  Each change is a record in the vault, fsynced before the command says it is done, and a
line in ``<data>/log/audit.log``; a refused change is logged as refused.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from typing import Any

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.interfaces import Actor, StoreError
from ourmail.manage import accountops
from ourmail.manage.audit import AuditFile, unix_user
from ourmail.store.userstore import MaildirStore
from ourmail.vault import expiry, retention
from ourmail.vault.audit import audit_line
from ourmail.vault.indexer import caught_up_index
from ourmail.vault.records import FormatError
from ourmail.vault.restore import RestoreRefused, restore
from ourmail.vault.retention import RetentionRefused
from ourmail.vault.segments import Damaged, SegmentLog
from ourmail.vault.vault import vault_log as open_log

Command = Callable[[Settings, AccountDB, argparse.Namespace], None]


class VaultRefused(Exception):
    """A vault command that cannot be done: printed without a traceback, exit status 1."""


def vault_log(settings: Settings) -> SegmentLog:
    """The vault of ``settings`` (created 0700 when missing)."""
    log = open_log(settings)
    log.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return log


def _guarded(command: Command) -> Command:
    """``command``, with a vault that does not parse or cannot be opened (its folder is the
    server user's, mode 0700) reported without a traceback."""

    def run(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
        try:
            command(settings, db, args)
        except (FormatError, Damaged) as e:
            raise VaultRefused(
                f"the vault cannot be read ({e}): see `ourmail vault verify`"
            ) from None
        except OSError as e:
            raise VaultRefused(f"the vault cannot be used: {e}") from None

    return run


def _actor() -> Actor:
    return Actor(unix_user(), "cli")


def _change(settings: Settings, action: str, target: str, work: Callable[[], str]) -> str:
    """Run ``work`` (it returns what to log as the detail) and write its audit.log line."""
    trail, actor = AuditFile(settings.data_dir), _actor()
    try:
        trail.ready()
    except OSError as e:
        raise VaultRefused(f"the audit log cannot be written: {e}") from None
    try:
        detail = work()
    except (RetentionRefused, RestoreRefused, StoreError) as e:
        trail.record(actor, f"vault.{action}", target, "refused", str(e))
        raise VaultRefused(str(e)) from None
    audit_line(trail, actor, action, target, detail)
    return detail


def _append(log: SegmentLog, make: Callable[[retention.State], Any], settings: Settings) -> int:
    """Append the record ``make`` builds from the current state, under the lock; its seq."""
    with log.locked():
        state = retention.load(log, settings.domains)
        ((_, record),) = log.append([make(state)], time.time())
        log.sync()
    return record.seq


# -- rule ------------------------------------------------------------------------------------


def rule_set(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    if args.default:
        scope = "default"
    elif args.domain:
        scope = f"domain:{args.domain}"
    else:
        scope = f"user:{args.user}"
    if args.keep_years is not None:
        if args.keep_years <= 0:
            raise VaultRefused("--keep-years takes a positive number")
        keep: int | None = retention.days_for_years(args.keep_years)
    else:
        keep = None if args.forever else args.keep_days
    log = vault_log(settings)

    def work() -> str:
        item = retention.rule_item(scope, keep, _actor().who)
        seq = _append(log, lambda state: item, settings)
        return f"record {seq}: {item[1]['scope']} keep {_days(keep)}"

    print(_change(settings, "rule", scope, work))


def rule_list(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    state = retention.load(vault_log(settings), settings.domains)
    if "default" not in state.rules:
        print("default\tforever\t(built in)")
    for scope, rule in sorted(state.rules.items()):
        print(f"{scope}\t{_days(rule.keep_days)}\tset by {rule.by} {_when(rule.time)}")


def _days(keep: int | None) -> str:
    return "forever" if keep is None else f"{keep} days"


# -- hold ------------------------------------------------------------------------------------


def hold_add(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    scope = _hold_scope(args)
    log = vault_log(settings)

    def work() -> str:
        made = []

        def make(state: retention.State) -> Any:
            item = retention.hold_item(state, args.name, scope, args.reason, _actor().who)
            made.append(item)
            return item

        seq = _append(log, make, settings)
        fields = made[0][1]
        return f"record {seq}: hold {fields['name']} on {_scope_text(fields['scope'])}"

    print(_change(settings, "hold", args.name, work))


def _hold_scope(args: argparse.Namespace) -> dict[str, Any]:
    query = {
        "sender": args.sender,
        "recipient": args.recipient,
        "address": args.address,
        "subject": args.subject,
        "words": args.words,
        "attachment": args.attachment,
        "message_id": args.message_id,
        "start": _date(args.since, "--since"),
        "end": _date(args.until, "--until"),
    }
    query = {k: v for k, v in query.items() if v is not None}
    given = [k for k in ("user", "domain", "query_json") if getattr(args, k)]
    if len(given) + bool(query) != 1:
        raise VaultRefused(
            "give one of --user, --domain, --query-json, or query criteria "
            "(--from, --to, --address, --subject, --words, --attachment, --message-id, "
            "--since, --until)"
        )
    if args.user:
        return {"user": args.user}
    if args.domain:
        return {"domain": args.domain}
    return {"query": args.query_json if args.query_json else query}


def _date(value: str | None, option: str) -> float | None:
    """A day (2026-12-31, the start of that day in UTC) or a time in ISO 8601."""
    if value is None:
        return None
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise VaultRefused(f"{option}: a date must be written as 2026-12-31") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def hold_release(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    log = vault_log(settings)

    def work() -> str:
        seq = _append(
            log,
            lambda state: retention.release_item(state, args.name, args.reason, _actor().who),
            settings,
        )
        return f"record {seq}: hold {args.name} released"

    print(_change(settings, "release", args.name, work))


def holds(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    state = retention.load(vault_log(settings), settings.domains)
    for hold in state.holds.values():
        print(f"{hold.name}\t{hold.describe()}\tset by {hold.by} {_when(hold.time)}")
        print(f"\treason: {hold.reason}")
    count = len(state.holds)
    print(f"{count} active hold{'s' if count != 1 else ''}")


def _scope_text(scope: dict[str, Any]) -> str:
    (kind, value), *_ = scope.items()
    return f"{kind} {value}"


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


# -- expire ----------------------------------------------------------------------------------


def expire_cmd(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    now = time.time()
    if args.now is not None:
        asked = _date(args.now, "--now")
        assert asked is not None
        if asked > now and not args.dry_run:
            raise VaultRefused("--now may be in the future only with --dry-run")
        now = asked
    log = vault_log(settings)
    index = caught_up_index(log)  # for holds on body words and attachment names
    if args.dry_run:
        plan = expiry.plan(log, accountops.served_domains(settings, db), now, index)
        for seq in plan.captures:
            print(f"would expire record {seq}")
        _print_plan(plan, "would expire")
        return

    def work() -> str:
        report = expiry.expire(log, accountops.served_domains(settings, db), now, index=index)
        _print_plan(report.plan, "expired")
        return (
            f"record {report.record}: {len(report.plan.captures)} messages, "
            f"{report.plan.octets} octets; rules "
            + (", ".join(r.describe() for r in report.plan.rules) or "none")
        )

    _change(settings, "expire", "vault", work)


def _print_plan(plan: expiry.Plan, verb: str) -> None:
    rules = ", ".join(r.describe() for r in plan.rules) or "none"
    print(
        f"{verb} {len(plan.captures)} messages and {len(plan.blobs)} bodies "
        f"({plan.octets} octets stored), by rules {rules}"
    )
    for name, count in sorted(plan.held.items()):
        print(f"kept by hold {name}: {count} messages past their retention")


# -- restore ---------------------------------------------------------------------------------


def restore_cmd(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    address = accountops.address(settings, db, args.to)
    if not db.has_user(address):
        raise VaultRefused(f"no such user: {address}")
    log = vault_log(settings)
    trail = AuditFile(settings.data_dir)
    try:
        trail.ready()
    except OSError as e:
        raise VaultRefused(f"the audit log cannot be written: {e}") from None
    user = MaildirStore(settings.data_dir).user(address)
    try:
        from ourmail.admin.cli import _run_on_reactor  # cli imports this module

        done = _run_on_reactor(lambda: restore(log, user, args.seqs, args.folder, _actor(), trail))
    except (RestoreRefused, StoreError) as e:
        trail.record(_actor(), "vault.restore", address, "refused", str(e))
        raise VaultRefused(str(e)) from None
    for seq, uid in done:
        print(f"restored record {seq} to {address} {args.folder} as UID {uid}")


# -- the parser ------------------------------------------------------------------------------


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return number


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """The retention commands under ``ourmail vault`` (they set ``func``); ``parent``: the
    options every command takes (``--data``, ``--config``)."""
    common = [parent]
    rule = sub.add_parser("rule", parents=common, help="retention rules: how long mail is kept")
    rules = rule.add_subparsers(dest="rule_command", required=True)
    p = rules.add_parser(
        "set", parents=common, help="set the rule of the default, a domain or a user"
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--default", action="store_true", help="for everyone without a rule")
    who.add_argument("--domain", metavar="D")
    who.add_argument("--user", metavar="U")
    keep = p.add_mutually_exclusive_group(required=True)
    keep.add_argument("--keep-days", type=_positive, metavar="N")
    keep.add_argument("--keep-years", type=_positive, metavar="N")
    keep.add_argument("--forever", action="store_true")
    p.set_defaults(func=_guarded(rule_set))
    p = rules.add_parser("list", parents=common, help="the rules in force")
    p.set_defaults(func=_guarded(rule_list))

    hold = sub.add_parser("hold", parents=common, help="legal holds: mail kept whatever the rules")
    hold_cmds = hold.add_subparsers(dest="hold_command", required=True)
    p = hold_cmds.add_parser(
        "add", parents=common, help="hold a user's, a domain's or a query's mail"
    )
    p.add_argument("name", help="a name for the hold, unique among active holds")
    p.add_argument("--user", metavar="U")
    p.add_argument("--domain", metavar="D")
    p.add_argument("--query-json", metavar="J", help="a vault query as a JSON object")
    p.add_argument("--from", dest="sender", metavar="ADDRESS", help="address or @domain")
    p.add_argument("--to", dest="recipient", metavar="ADDRESS", help="address or @domain")
    p.add_argument("--address", metavar="ADDRESS", help="any party: address or @domain")
    p.add_argument("--subject", metavar="WORDS", help="words in the subject")
    p.add_argument("--words", metavar="WORDS", help="words in the subject or the text")
    p.add_argument("--attachment", metavar="NAME", help="an attachment's name")
    p.add_argument("--message-id", metavar="ID")
    p.add_argument("--since", metavar="DAY", help="captured from this day (2026-12-31)")
    p.add_argument("--until", metavar="DAY", help="captured before this day")
    p.add_argument("--reason", required=True, help="why (the case, the request)")
    p.set_defaults(func=_guarded(hold_add))
    p = hold_cmds.add_parser("release", parents=common, help="lift an active hold")
    p.add_argument("name")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_guarded(hold_release))
    p = sub.add_parser("holds", parents=common, help="the active holds, who set them and when")
    p.set_defaults(func=_guarded(holds))

    p = sub.add_parser(
        "expire", parents=common, help="remove the content of mail past its retention"
    )
    p.add_argument("--dry-run", action="store_true", help="list what would go, change nothing")
    p.add_argument("--now", metavar="ISO", help="decide as of this time (a past one)")
    p.set_defaults(func=_guarded(expire_cmd))

    p = sub.add_parser(
        "restore", parents=common, help="put vaulted messages back into a user's mailbox"
    )
    p.add_argument("seqs", nargs="+", type=_positive, metavar="SEQ", help="record numbers")
    p.add_argument("--to", required=True, metavar="USER")
    p.add_argument("--folder", default="INBOX", help="default: INBOX (created if missing)")
    p.set_defaults(func=_guarded(restore_cmd))
