"""``ourmail log filter USER [--since DATE|DURATION]``: what the filter chain refused or filed
into Junk for a user, for support staff; ``--client IP`` for what came from one address
(refusals at connect and MAIL have no recipient)."""

from __future__ import annotations

import argparse
import datetime
import re
import time
from typing import Any

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.filters.filterlog import LogDB
from ourmail.interfaces import FilterEvent

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: The most characters shown of one field (the reason may be longer: a reply's text).
SHOWN = 200
SHOWN_REASON = 500


class BadSince(ValueError):
    """``--since`` is neither a date nor a duration."""


def parse_since(text: str, now: float) -> float:
    """A POSIX time from ``2026-11-30``, ``2026-11-30T14:00`` (local time, or with an
    offset) or a duration back from ``now`` such as ``90m``, ``2h``, ``7d``, ``1d12h``."""
    text = text.strip()
    if _DURATION.fullmatch(text) or re.fullmatch(r"(\d+[smhdw])+", text):
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text))
        return now - seconds
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError as e:
        raise BadSince(f"--since takes a date (2026-11-30) or a duration (2h, 7d): {text!r}") from e
    return when.timestamp()


def shown(text: str, limit: int = SHOWN) -> str:
    """``text`` safe for a terminal: the sender chose most of it (the envelope addresses, the
    Message-ID of RFC 5322 §3.6.4, words of a reply), so each character that is not
    printable (ESC, other controls, line breaks, bidi overrides) is shown as its Python
    escape (``\\x1b``), and at most ``limit`` characters are kept."""
    safe = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
    return safe if len(safe) <= limit else safe[:limit] + "..."


def describe(event: FilterEvent) -> str:
    """One entry as a line (or two) a person reads; every field through :func:`shown`."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.at))
    what = {"reject": "refused", "tempfail": "deferred", "junk": "Junk"}.get(
        event.action, shown(event.action)
    )
    sender = "<>" if event.sender == "" else f"<{shown(event.sender)}>" if event.sender else "-"
    parts = [
        when,
        what,
        f"at {shown(event.stage)}",
        f"by {shown(event.check)}",
        f"from {sender}",
        f"client {shown(event.client_address)}",
    ]
    if event.recipient:
        parts.append(f"to <{shown(event.recipient)}>")
    if event.message_id:
        parts.append(f"message-id {shown(event.message_id)}")
    return "  ".join(parts) + f"\n    {shown(event.reason, SHOWN_REASON)}"


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    logs = topics.add_parser("log", parents=[common], help="what the server decided")
    cmds = logs.add_subparsers(dest="command", required=True)
    p = cmds.add_parser(
        "filter",
        parents=[common],
        help="refusals and Junk filings of the filter chain, for one user or client",
    )
    p.add_argument("user", nargs="?", help="the recipient's address")
    p.add_argument("--client", help="a client IP address instead (refusals at connect, MAIL)")
    p.add_argument("--since", default="7d", help="a date or a duration back (default 7d)")
    p.set_defaults(func=filter_log)


def filter_log(settings: Settings, db: AccountDB, args: argparse.Namespace) -> None:
    if (args.user is None) == (args.client is None):
        raise BadSince("name a user, or a client address with --client")
    since = parse_since(args.since, time.time())
    path = settings.data_dir / "filters" / "log.sqlite"
    if not path.exists():
        print("the filter log is empty (nothing refused or filed into Junk yet)")
        return
    entries = LogDB(path).entries(recipient=args.user, client=args.client, since=since)
    for event in entries:
        print(describe(event))
    who = args.user or f"client {args.client}"
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} for {who}")
