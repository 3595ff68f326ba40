"""The vault's audit trail: who searched, exported or restored what (issue 18 point 8).

Every such action appends an ``audit`` record to the vault (docs/vault-format.md), so the
trail is part of the chain an auditor verifies, and writes a line in ``<data>/log/audit.log``
(:class:`~ourmail.interfaces.IAuditLog`) beside the other admin changes.  Rules, holds,
releases and expiry runs are records of their own kinds and need no ``audit`` record; the
commands that set them write their ``audit.log`` line with :func:`audit_line`.
"""

from __future__ import annotations

import time as time_
from typing import Any

from ourmail.interfaces import Actor, IAuditLog
from ourmail.vault.segments import SegmentLog

#: Longest query and detail text kept in a record.
MAX_TEXT = 2000


def audit(
    log: SegmentLog,
    by: Actor,
    action: str,
    query: str,
    count: int,
    detail: str,
    trail: IAuditLog | None = None,
    now: float | None = None,
) -> int:
    """Append and fsync an ``audit`` record (``action``: ``search``, ``export``,
    ``restore`` …; ``query``: what was asked; ``count``: how many messages it concerned),
    then write the ``audit.log`` line when ``trail`` is given.  Returns the record's seq.
    Call it *before* showing or handing over anything (a search's results, an export): an
    action the trail cannot record is not done.  Blocks on the disk: call it in a thread."""
    fields: dict[str, Any] = {
        "action": action,
        "by": _who(by),
        "query": query[:MAX_TEXT],
        "count": count,
        "detail": detail[:MAX_TEXT],
    }
    with log.locked():
        ((_, record),) = log.append([("audit", fields, None)], time_.time() if now is None else now)
        log.sync()
    if trail is not None:
        audit_line(trail, by, action, query, f"record {record.seq}: {count}; {detail}")
    return record.seq


def audit_line(trail: IAuditLog, by: Actor, action: str, target: str, detail: str) -> None:
    """The ``audit.log`` line of a vault action (``vault.<action>``), fsynced."""
    trail.record(by, f"vault.{action}", target, "ok", detail)


def _who(by: Actor) -> str:
    """``who``, and for the console where from: the record's ``by``."""
    return f"{by.who} (web {by.client})" if by.via == "web" else by.who
