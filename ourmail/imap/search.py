"""SEARCH keys (RFC 3501 §6.4.4): parsing into a predicate and matching messages.

Flag, size, UID, sequence and internal-date keys are answered from the store's index, the
common header keys (FROM, TO, CC, BCC, SUBJECT, SENT*, HEADER Message-ID …) from the stored
summary; other HEADER keys, BODY and TEXT read the message, BODY and TEXT in chunks from its
buffer (a memory map when large).
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Callable, Sequence

import attrs

from ourmail.imap.sequence import parse_set, resolve_seq, resolve_uid
from ourmail.imap.wire import MONTHS, Atom, ParseError, Token, astring
from ourmail.interfaces import IStoredMessage
from ourmail.mime import structure
from ourmail.mime.content import contains
from ourmail.mime.summary import SEARCH_HEADERS, header_values

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"FROM", "TO", "CC", "BCC", "SUBJECT"}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
MAX_KEYS = 1000


class Candidate(structure.LazyMessage):
    """What a search key may ask of one message.

    Common headers come from the stored summary; other headers and the body read the message.
    """

    def __init__(self, seq: int, recent: bool, message: IStoredMessage) -> None:
        super().__init__(message.buffer)
        self.seq, self.recent, self.message = seq, recent, message
        self.uid, self.flags = message.uid, message.flags
        self.size, self.internal_date = message.size, message.internal_date

    def header(self, name: str) -> str:
        if name in SEARCH_HEADERS:
            return self.message.summary().headers.get(name, "")
        return header_values(self.part, name)

    def has_header(self, name: str) -> bool:
        if name in SEARCH_HEADERS:
            return name in self.message.summary().headers
        return any(fname == name for fname, _ in self.part.fields)


def parse_date(tok: Token) -> datetime.date:
    """RFC 3501 ``date``: ``1-Feb-1994``."""
    text = astring(tok).decode("ascii", "replace")
    try:
        day, mon, year = text.split("-")
        return datetime.date(int(year), MONTHS[mon.upper()], int(day))
    except (ValueError, KeyError):
        raise ParseError(f"bad date {text!r}") from None


Predicate = Callable[[Candidate], bool]


@attrs.frozen
class Search:
    """A parsed search: the predicate, and whether it used MODSEQ (RFC 7162 §3.1.5).

    ``indexed`` are the top-level FROM/TO/CC/BCC/SUBJECT keys as (field, needle) pairs, which a
    store can answer from an index (:meth:`IFolder.search_headers`); ``rest`` is the predicate
    of the other top-level keys, to test on the messages the index keys let through."""

    predicate: Predicate
    uses_modseq: bool
    indexed: list[tuple[str, str]] = attrs.Factory(list)
    rest: Predicate = attrs.field(default=lambda c: True)


class _Parser:
    def __init__(
        self, tokens: Sequence[Token], count: int, uids: Sequence[int], saved: set[int]
    ) -> None:
        self.tokens, self.pos, self.count, self.uids = tokens, 0, count, uids
        self.saved = saved
        self.keys = 0
        self.uses_modseq = False

    def next(self) -> Token:
        if self.pos >= len(self.tokens):
            raise ParseError("missing search argument")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def text(self) -> str:
        return astring(self.next()).decode("utf-8", "replace").lower()

    def number(self) -> int:
        tok = self.next()
        if not isinstance(tok, Atom) or not tok.isdigit():
            raise ParseError("expected a number")
        return int(tok)

    def all(self) -> Predicate:
        preds = []
        while self.pos < len(self.tokens):
            preds.append(self.key())
        if not preds:
            raise ParseError("empty search")
        return _and(preds)

    def key(self) -> Predicate:
        self.keys += 1
        if self.keys > MAX_KEYS:
            raise ParseError("search too complex")
        tok = self.next()
        if isinstance(tok, list):
            sub = _Parser(tok, self.count, self.uids, self.saved)
            sub.keys = self.keys
            pred = sub.all()
            self.keys = sub.keys
            self.uses_modseq |= sub.uses_modseq
            return pred
        if not isinstance(tok, Atom):
            raise ParseError("expected a search key")
        key = tok.upper()
        if key == "ALL":
            return lambda c: True
        if key in _FLAG_KEYS:
            flag, want = _FLAG_KEYS[key]
            return lambda c: (flag in c.flags) == want
        if key == "NEW":
            return lambda c: c.recent and "\\Seen" not in c.flags
        if key == "OLD":
            return lambda c: not c.recent
        if key == "RECENT":
            return lambda c: c.recent
        if key in ("KEYWORD", "UNKEYWORD"):
            word = astring(self.next()).decode("utf-8", "replace")
            want = key == "KEYWORD"
            return lambda c: (word in c.flags) == want
        if key in _HEADER_KEYS:
            needle = self.text()
            field = key.lower()
            return lambda c: needle in c.header(field).lower()
        if key == "HEADER":
            name, needle = self.text(), self.text()
            if not needle:
                return lambda c: c.has_header(name)
            return lambda c: needle in c.header(name).lower()
        if key in ("BODY", "TEXT"):
            needle = self.text().encode("utf-8")
            if key == "BODY":
                return lambda c: contains(c.data, c.part.body_start, len(c.data), needle)
            return lambda c: contains(c.data, 0, len(c.data), needle)
        if key in _DATE_KEYS:
            return self._date(key, parse_date(self.next()))
        if key in ("LARGER", "SMALLER"):
            n = self.number()
            return (lambda c: c.size > n) if key == "LARGER" else (lambda c: c.size < n)
        if key == "$":  # RFC 5182 §2.2: the saved result
            saved = self.saved
            return lambda c: c.uid in saved
        if key == "UID":
            text = astring(self.next()).decode("ascii", "replace")
            if text == "$":
                saved = self.saved
                return lambda c: c.uid in saved
            uids = set(resolve_pos_uids(parse_set(text), self.uids))
            return lambda c: c.uid in uids
        if key == "MODSEQ":  # RFC 7162 §3.1.5: MODSEQ ["entry-name" entry-type] mod-sequence
            if isinstance(
                self.tokens[self.pos : self.pos + 1][0:1] and self.tokens[self.pos], bytes
            ):
                self.next()  # a metadata item name: flags all share the message's MODSEQ
                kind = self.next()
                if not isinstance(kind, Atom) or kind.upper() not in ("PRIV", "SHARED", "ALL"):
                    raise ParseError("MODSEQ entry type must be priv, shared or all")
            n = self.number()
            self.uses_modseq = True
            return lambda c: c.message.modseq >= n
        if key == "NOT":
            inner = self.key()
            return lambda c: not inner(c)
        if key == "OR":
            a, b = self.key(), self.key()
            return lambda c: a(c) or b(c)
        if key[:1].isdigit() or key[:1] == "*":
            seqs = set(resolve_seq(parse_set(key), self.count))
            return lambda c: c.seq in seqs
        raise ParseError(f"unknown search key {key[:30]}")

    def _date(self, key: str, day: datetime.date) -> Predicate:
        op = key.removeprefix("SENT")

        def date_of(c: Candidate) -> datetime.date | None:
            if not key.startswith("SENT"):
                return datetime.datetime.fromtimestamp(c.internal_date, datetime.UTC).date()
            parsed = email.utils.parsedate_tz(c.header("date"))
            if parsed is None:
                return None
            try:
                return datetime.date(parsed[0], parsed[1], parsed[2])
            except ValueError:
                return None

        def match(c: Candidate) -> bool:
            d = date_of(c)
            if d is None:
                return False
            return d < day if op == "BEFORE" else (d == day if op == "ON" else d >= day)

        return match


def resolve_pos_uids(ranges: list[tuple[int | None, int | None]], uids: Sequence[int]) -> list[int]:
    return [uids[i] for i in resolve_uid(ranges, uids)]


def _and(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    return lambda c: all(p(c) for p in preds)


def parse_search(
    tokens: Sequence[Token], count: int, uids: Sequence[int], saved: set[int] | None = None
) -> Search:
    """The search keys in ``tokens`` (after any CHARSET, which the caller takes); ``saved``
    is the SEARCHRES result that ``$`` stands for (RFC 5182)."""
    parser = _Parser(tokens, count, uids, set() if saved is None else saved)
    keys: list[Predicate] = []
    indexed: list[tuple[str, str]] = []
    rest: list[Predicate] = []
    while parser.pos < len(tokens):
        head = tokens[parser.pos]
        pred = parser.key()
        keys.append(pred)
        if isinstance(head, Atom) and head.upper() in _HEADER_KEYS:
            needle = astring(tokens[parser.pos - 1]).decode("utf-8", "replace").lower()
            if needle:
                indexed.append((head.lower(), needle))
                continue
        rest.append(pred)
    if not keys:
        raise ParseError("empty search")
    return Search(_and(keys), parser.uses_modseq, indexed, _and(rest) if rest else lambda c: True)
