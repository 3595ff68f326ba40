"""Sequence sets (RFC 3501 §9 ``sequence-set``): ``1:4,7,10:*``."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

from ourmail.imap.wire import ParseError

#: A parsed sequence set: (low, high) pairs, None standing for ``*``.
Ranges = list[tuple[int | None, int | None]]

_SEQ_RE = re.compile(r"^(\d+|\*)(?::(\d+|\*))?$")
MAX_RANGES = 10_000


def parse_set(text: str) -> list[tuple[int | None, int | None]]:
    """Ranges of (low, high) with None for ``*``; ParseError if malformed."""
    if text == "$":
        raise ParseError("search result references are not supported")
    parts = text.split(",")
    if len(parts) > MAX_RANGES:
        raise ParseError("sequence set too long")
    out = []
    for part in parts:
        m = _SEQ_RE.match(part)
        if not m:
            raise ParseError(f"bad sequence set {text[:50]!r}")
        vals = []
        for g in (m.group(1), m.group(2) or m.group(1)):
            if g == "*":
                vals.append(None)
            else:
                v = int(g)
                if not 0 < v < 2**32:
                    raise ParseError("sequence number out of range")
                vals.append(v)
        out.append((vals[0], vals[1]))
    return out


def resolve_seq(ranges: list[tuple[int | None, int | None]], count: int) -> list[int]:
    """Message sequence numbers (1-based) named by ``ranges`` in a mailbox of ``count``."""
    chosen: set[int] = set()
    for lo, hi in ranges:
        a, b = lo or count, hi or count
        a, b = min(a, b), max(a, b)
        chosen.update(range(max(a, 1), min(b, count) + 1))
    return sorted(chosen)


def resolve_uid(ranges: list[tuple[int | None, int | None]], uids: Sequence[int]) -> list[int]:
    """Positions (0-based) of the UIDs named by ``ranges``; ``*`` is the highest UID present.

    RFC 3501 §6.4.8: a range like ``5:*`` always includes the highest UID even when it is below 5.
    """
    if not uids:
        return []
    top = uids[-1]
    chosen: set[int] = set()
    for lo, hi in ranges:
        a, b = lo or top, hi or top
        a, b = min(a, b), max(a, b)
        chosen.update(range(bisect.bisect_left(uids, a), bisect.bisect_right(uids, b)))
    return sorted(chosen)


def format_set(numbers: Sequence[int]) -> str:
    """Numbers as a sequence set, consecutive runs as ranges, order kept (``1:3,7,5``).

    RFC 4315 §3 pairs COPYUID's source and destination sets element by element, so runs are
    only merged when they ascend by one.
    """
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(out)
