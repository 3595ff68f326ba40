"""``ourmail vault search`` and ``ourmail vault reindex``: find vaulted mail (docs/vault.md#search).

``search`` first catches the index up with the segments (the server may be down), then
writes the search to the vault's audit trail (an ``audit`` record, synced) and to the admin
audit log, and only then shows the page of results.  ``reindex`` forgets the index and builds
it again from the segments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from ourmail.admin.logcmd import shown
from ourmail.config import Settings
from ourmail.interfaces import Actor, VaultHit, VaultQuery
from ourmail.manage.audit import AuditFile, unix_user
from ourmail.vault.index import COUNT_LIMIT, IndexError_, QueryError, SQLiteIndex
from ourmail.vault.indexer import Indexer
from ourmail.vault.records import FormatError
from ourmail.vault.segments import SegmentLog
from ourmail.vault.vault import vault_log

#: Most results on one page.
MAX_PER_PAGE = 1000
#: How far behind the vault the index may be before ``search`` says it catches up first.
BEHIND = 10_000
#: How often ``reindex`` prints its progress, in seconds.
PROGRESS_EVERY = 5.0


class VaultSearchError(Exception):
    """A search or reindex that cannot be done: said to the admin, exit status 1."""


def vault_folder(settings: Settings) -> Path:
    """The vault's folder, ``<data>/vault``."""
    return settings.data_dir / "vault"


def _open(settings: Settings) -> tuple[SegmentLog, SQLiteIndex]:
    root = vault_folder(settings)
    if not (root / "segments").is_dir():
        raise VaultSearchError(f"there is no vault in {root} (nothing has been captured)")
    try:
        return vault_log(settings), SQLiteIndex(root / "index.sqlite")
    except IndexError_ as e:
        raise VaultSearchError(str(e)) from None
    except (OSError, sqlite3.Error) as e:
        raise VaultSearchError(f"the search index cannot be opened: {e}") from None


def parse_when(text: str, what: str, end: bool = False) -> float:
    """A POSIX time from ``2026-11-30`` or ``2026-11-30T14:00`` (UTC unless an offset is
    given); for ``end`` a bare date means the end of that day."""
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise VaultSearchError(f"{what} takes a date (2026-11-30) or a time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    if end and len(text.strip()) == 10:
        when += datetime.timedelta(days=1)
    return when.timestamp()


def query_of(args: argparse.Namespace) -> VaultQuery:
    """The search the options ask for (VaultSearchError when they ask for none)."""
    query = VaultQuery(
        sender=args.sender or "",
        recipient=args.to or "",
        address=args.address or "",
        start=parse_when(args.since, "--since") if args.since else None,
        end=parse_when(args.until, "--until", end=True) if args.until else None,
        subject=args.subject or "",
        words=args.words or "",
        attachment=args.attachment or "",
        message_id=args.message_id or "",
    )
    if query.empty():
        raise VaultSearchError("say what to search for (see `ourmail vault search --help`)")
    return query


def asked(query: VaultQuery) -> dict[str, Any]:
    """The criteria given, as the audit trail keeps them."""
    return {k: v for k, v in attrs.asdict(query).items() if v not in ("", None)}


def _audit(settings: Settings, log: SegmentLog, query: VaultQuery, count: int) -> None:
    """The search in the vault's audit trail (synced) and in the admin audit log."""
    by = unix_user()
    criteria = asked(query)
    fields: dict[str, Any] = {
        "action": "search",
        "by": by,
        "query": criteria,
        "count": count,
        "detail": "ourmail vault search",
    }
    with log.locked():
        log.append([("audit", fields, None)], time.time())
    log.sync()
    detail = json.dumps({"query": criteria, "count": count}, ensure_ascii=False)
    AuditFile(settings.data_dir).record(Actor(by, "cli"), "vault.search", "vault", "ok", detail)


def vault_search(settings: Settings, db: object, args: argparse.Namespace) -> None:
    """Catch the index up, search, log the search, print a page of hits."""
    query = query_of(args)
    per_page = args.per_page
    if not 1 <= per_page <= MAX_PER_PAGE or args.page < 1:
        raise VaultSearchError(f"--page is 1 or more, --per-page 1 to {MAX_PER_PAGE}")
    log, index = _open(settings)
    behind = log.head()[0] - index.last_seq()
    if behind > BEHIND:
        print(f"the index is about {behind} records behind the vault: catching up first",
              file=sys.stderr)  # fmt: skip
    try:
        Indexer(log, index).catch_up()
        total, hits = index.search(query, (args.page - 1) * per_page, per_page)
    except QueryError as e:
        raise VaultSearchError(str(e)) from None
    except FormatError as e:
        raise VaultSearchError(f"the vault cannot be read: {e}") from None
    except (OSError, sqlite3.Error) as e:
        raise VaultSearchError(f"the search index cannot be used: {e}") from None
    try:
        _audit(settings, log, query, total)
    except OSError as e:
        raise VaultSearchError(f"the search cannot be audit-logged, so is not shown: {e}") from None
    capped = total >= (args.page - 1) * per_page + COUNT_LIMIT
    pages = max(1, math.ceil(total / per_page))
    if args.json:
        json.dump(
            {
                "total": total,
                "at_least": capped,
                "page": args.page,
                "pages": pages,
                "hits": [attrs.asdict(h) for h in hits],
            },
            sys.stdout,
            ensure_ascii=False,
        )
        print()
        return
    print(f"{'seq':>8}  {'date (UTC)':16}  {'from':30}  {'to':30}  {'subject':40}  {'size':>9}")
    for hit in hits:
        print(_row(hit))
    more = "at least " if capped else ""
    print(f"{more}{total} message{'s' if total != 1 else ''}, page {args.page} of {more}{pages}")


def _row(hit: VaultHit) -> str:
    when = datetime.datetime.fromtimestamp(hit.time, datetime.UTC).strftime("%Y-%m-%d %H:%M")
    to = hit.recipients[0] if hit.recipients else ""
    if len(hit.recipients) > 1:
        to += f" +{len(hit.recipients) - 1}"
    return (
        f"{hit.seq:>8}  {when:16}  {shown(hit.sender, 30):30}  {shown(to, 30):30}  "
        f"{shown(hit.subject, 40):40}  {hit.size:>9}"
    )


def vault_reindex(settings: Settings, db: object, args: argparse.Namespace) -> None:
    """Forget the index and build it again from the segments, printing progress."""
    log, index = _open(settings)
    started = last_print = time.monotonic()

    def progress(messages: int, seq: int) -> None:
        nonlocal last_print
        now = time.monotonic()
        if now - last_print >= PROGRESS_EVERY:
            last_print = now
            rate = messages / max(now - started, 1e-6)
            print(f"{messages} messages indexed (up to record {seq}), {rate:.0f} a second")

    def rebuild() -> int:
        try:
            return Indexer(log, index).rebuild(progress)
        except FormatError as e:
            raise VaultSearchError(f"the vault cannot be read: {e}") from None
        except (OSError, sqlite3.Error) as e:
            raise VaultSearchError(f"the search index cannot be written: {e}") from None

    audit, actor = AuditFile(settings.data_dir), Actor(unix_user(), "cli")
    try:
        count = rebuild()
    except VaultSearchError:
        audit.record(actor, "vault.reindex", "vault", "failed")
        raise
    elapsed = time.monotonic() - started
    audit.record(actor, "vault.reindex", "vault", "ok", f"{count} messages")
    print(
        f"reindexed {count} message{'s' if count != 1 else ''} in {elapsed:.1f} s "
        f"({count / max(elapsed, 1e-6):.0f} a second)"
    )


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``search`` and ``reindex`` under ``ourmail vault``."""
    p = sub.add_parser(
        "search", parents=[common], help="find vaulted messages (the search is audit-logged)"
    )
    p.add_argument("--from", dest="sender", metavar="ADDRESS", help="sender, or @domain")
    p.add_argument("--to", metavar="ADDRESS", help="a recipient, or @domain")
    p.add_argument("--address", metavar="ADDRESS", help="any address of it, or @domain")
    p.add_argument("--since", metavar="DATE", help="vaulted on or after (UTC date or time)")
    p.add_argument("--until", metavar="DATE", help="vaulted on or before (UTC date or time)")
    p.add_argument("--subject", metavar="WORDS", help="all these words in the subject")
    p.add_argument("--words", metavar="WORDS", help="all these words in the subject or text")
    p.add_argument("--attachment", metavar="NAME", help="an attachment's file name")
    p.add_argument("--message-id", metavar="ID", help="the Message-ID, with or without <>")
    p.add_argument("--page", type=int, default=1, help="which page (default 1)")
    p.add_argument("--per-page", type=int, default=50, help="hits a page (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=vault_search)
    p = sub.add_parser("reindex", parents=[common], help="rebuild the search index")
    p.set_defaults(func=vault_reindex)
