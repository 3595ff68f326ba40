"""SORT (RFC 5256 §3): ordering search results by ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO.

Keys come from the store's index and summary (no message file is read).  Strings compare with
``i;ascii-casemap`` (RFC 4790: ASCII letters case-folded); ties fall back to the sequence
number, as §3 requires.  SUBJECT sorts on the "base subject" of §2.1: reply and forward prefixes,
``[list]`` tags and ``(fwd)`` trailers removed.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Sequence
from email.utils import getaddresses
from typing import Any

from ourmail.imap.search import Candidate
from ourmail.imap.wire import Atom, ParseError, Token

KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO")
_WS = re.compile(r"\s+")
_TRAILER = re.compile(r"\s*\(fwd\)\s*$", re.I)
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(r"^(?:" + _BLOB + r")*(?:re|fwd?)\s*(?:" + _BLOB + r")?:\s*", re.I)
_LEADING_BLOB = re.compile(r"^" + _BLOB)
_FWD_WRAP = re.compile(r"^\[fwd:(.*)\]$", re.I | re.S)


def parse_criteria(tok: Token) -> list[tuple[str, bool]]:
    """``(REVERSE DATE SUBJECT)`` -> [("DATE", True), ("SUBJECT", False)]."""
    if not isinstance(tok, list) or not tok:
        raise ParseError("SORT takes a list of sort criteria")
    out: list[tuple[str, bool]] = []
    reverse = False
    for item in tok:
        name = item.upper() if isinstance(item, Atom) else ""
        if name == "REVERSE" and not reverse:
            reverse = True
            continue
        if name not in KEYS:
            raise ParseError(f"unknown sort criterion {name or item!r}")
        out.append((name, reverse))
        reverse = False
    if reverse or not out:
        raise ParseError("REVERSE must precede a sort criterion")
    return out


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1, steps 1-6, on an already decoded subject."""
    s = _WS.sub(" ", subject).strip()
    while True:
        before = s
        s = _TRAILER.sub("", s)  # (2) trailers
        while True:  # (3)-(5) leaders and leading [blobs]
            inner = s
            s = _LEADER.sub("", s)
            stripped = _LEADING_BLOB.sub("", s)
            if stripped:
                s = stripped
            if s == inner:
                break
        m = _FWD_WRAP.match(s)  # (6) [fwd: subject]
        if m:
            s = m.group(1).strip()
        if s == before:
            return s.lower()


def _first_mailbox(value: str) -> str:
    """The local part of the first address (§3: the addr-mailbox), case-folded."""
    for _, addr in getaddresses([value]):
        if addr:
            return addr.rpartition("@")[0].lower() if "@" in addr else addr.lower()
    return ""


def _sent(c: Candidate) -> float:
    """§3 DATE: the Date: header in UTC, or the internal date when it cannot be parsed."""
    parsed = email.utils.parsedate_tz(c.header("date"))
    if parsed is None:
        return c.internal_date
    try:
        return float(email.utils.mktime_tz(parsed))
    except (OverflowError, ValueError):
        return c.internal_date


_KEY: dict[str, Callable[[Candidate], Any]] = {
    "ARRIVAL": lambda c: c.internal_date,
    "CC": lambda c: _first_mailbox(c.header("cc")),
    "DATE": _sent,
    "FROM": lambda c: _first_mailbox(c.header("from")),
    "SIZE": lambda c: c.size,
    "SUBJECT": lambda c: base_subject(c.header("subject")),
    "TO": lambda c: _first_mailbox(c.header("to")),
}


def sort(candidates: Sequence[Candidate], criteria: list[tuple[str, bool]]) -> list[Candidate]:
    """``candidates`` (in sequence order) sorted by ``criteria``; stable on sequence number."""
    ordered = sorted(candidates, key=lambda c: c.seq)
    for name, reverse in reversed(criteria):  # stable sorts from the last key to the first
        ordered.sort(key=_KEY[name], reverse=reverse)
    return ordered
