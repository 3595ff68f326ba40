"""SEARCH keys (RFC 3501 §6.4.4): parsing into a predicate and matching messages.

Flag, keyword, size, UID, sequence and internal-date keys are answered with set operations on
the store's index (no pass over the messages), FROM/TO/CC/BCC/SUBJECT from its header index;
when the session's view is the folder as it is, a flag key or its negation (UNSEEN, UNDELETED)
costs what it finds, not what the folder holds;
SENT* and HEADER on the common fields test each remaining message's stored summary; other
HEADER keys, BODY and TEXT read the message, BODY and TEXT in chunks from its buffer (a memory
map when large).  In a conjunction the indexed keys go first, so the keys that test message by
message see only the messages the index let through.
"""

from __future__ import annotations

import bisect
import datetime
import email.utils
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks

from ourmail.imap.sequence import parse_set, resolve_seq, resolve_uid
from ourmail.imap.wire import MONTHS, Atom, ParseError, Token, astring
from ourmail.interfaces import Buffer, IFolder, IStoredMessage
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
#: What an indexed key asks of the store: the UIDs it matches (present or not).
Lookup = Callable[["Scope"], AbstractSet[int]]


class Scope:
    """What a search runs over: the messages of a session's view still present in the folder.

    ``whole`` says the view is the folder's UIDs as they are (no expunge or delivery pending
    for the session, the usual case); then an exact index answer needs no intersection with the
    view, and :attr:`universe`, a set of every UID, is built only for the keys that need it.
    """

    def __init__(self, folder: IFolder, view: Sequence[int], recent: AbstractSet[int]) -> None:
        self.folder, self.view, self.recent = folder, view, recent
        present = folder.uids()
        self.whole = len(present) == len(view) and present == view
        self._universe: set[int] | None = None

    @property
    def universe(self) -> set[int]:
        """The UIDs searched: those of the view still present (the caller must not change it)."""
        if self._universe is None:
            self._universe = set(self.view)
            if not self.whole:
                self._universe &= set(self.folder.uids())
        return self._universe

    def exactly(self, found: AbstractSet[int]) -> set[int]:
        """The UIDs of ``found``, an exact index answer (UIDs present only), in the scope."""
        return set(found) if self.whole else self.universe.intersection(found)

    def within(self, within: set[int] | None) -> set[int]:
        """``within``, or every UID of the scope for None."""
        return self.universe if within is None else within

    def candidate(self, uid: int) -> Candidate | None:
        """The message as a search key sees it; None if it is gone."""
        try:
            message = self.folder.message(uid)
        except KeyError:
            return None
        return Candidate(bisect.bisect_left(self.view, uid) + 1, uid in self.recent, message)


class Key:
    """One search key, or a combination of keys.

    ``test`` decides for one message; :meth:`select` picks the matching UIDs out of a set
    (None: the whole scope, which need not be built), which indexed keys do with set
    operations on the store's index instead of a test per message.  ``cost`` orders the keys
    of a conjunction: 0 from an index, 1 from the stored summary, 2 reading the message."""

    cost = 1

    def __init__(self, test: Predicate) -> None:
        self.test = test

    def children(self) -> list[Key]:
        """The keys this one combines."""
        return []

    def select(self, scope: Scope, within: set[int] | None) -> set[int]:
        found = set()
        for uid in scope.within(within):
            cand = scope.candidate(uid)
            if cand is not None and self.test(cand):
                found.add(uid)
        return found


class _Costly(Key):
    """A key that reads the message (BODY, TEXT, uncommon HEADER fields)."""

    cost = 2


class _Indexed(Key):
    """A key the store answers from its index: ``lookup`` gives the UIDs that match.

    ``exact`` says the lookup gives UIDs present only; ``negated``, if given, is an exact
    lookup of the UIDs that do not match (for NOT)."""

    cost = 0

    def __init__(
        self, test: Predicate, lookup: Lookup, exact: bool = False, negated: Lookup | None = None
    ) -> None:
        super().__init__(test)
        self.lookup, self.exact, self.negated = lookup, exact, negated

    def select(self, scope: Scope, within: set[int] | None) -> set[int]:
        if within is None and self.exact:
            return scope.exactly(self.lookup(scope))
        return scope.within(within).intersection(self.lookup(scope))


class _All(Key):
    cost = 0

    def __init__(self) -> None:
        super().__init__(lambda c: True)

    def select(self, scope: Scope, within: set[int] | None) -> set[int]:
        return scope.within(within)


class _And(Key):
    def __init__(self, keys: list[Key]) -> None:
        super().__init__(lambda c: all(k.test(c) for k in keys))
        self.keys = sorted(keys, key=lambda k: k.cost)  # the cheapest narrow the rest
        self.cost = max(k.cost for k in keys)

    def children(self) -> list[Key]:
        return self.keys

    def select(self, scope: Scope, within: set[int] | None) -> set[int]:
        for key in self.keys:
            if within is not None and not within:
                break
            within = key.select(scope, within)
        return scope.within(within)


class _Or(Key):
    def __init__(self, a: Key, b: Key) -> None:
        super().__init__(lambda c: a.test(c) or b.test(c))
        self.a, self.b = (a, b) if a.cost <= b.cost else (b, a)
        self.cost = max(a.cost, b.cost)

    def children(self) -> list[Key]:
        return [self.a, self.b]

    def select(self, scope: Scope, within: set[int] | None) -> set[int]:
        first = self.a.select(scope, within)
        if within is None and self.b.cost == 0:  # the index answers for the whole scope
            return first | self.b.select(scope, None)
        return first | self.b.select(scope, scope.within(within) - first)


class _Not(Key):
    def __init__(self, inner: Key) -> None:
        super().__init__(lambda c: not inner.test(c))
        self.inner = inner
        self.cost = inner.cost

    def children(self) -> list[Key]:
        return [self.inner]

    def select(self, scope: Scope, within: set[int] | None) -> set[int]:
        inner = self.inner
        if isinstance(inner, _Indexed):  # one set operation instead of two
            if within is None and inner.negated is not None:
                return scope.exactly(inner.negated(scope))
            return scope.within(within).difference(inner.lookup(scope))
        return scope.within(within) - inner.select(scope, within)


def _flag(flag: str) -> Key:
    return _Indexed(
        lambda c: flag in c.flags,
        lambda s: s.folder.uids_with_flag(flag),
        exact=True,
        negated=lambda s: s.folder.uids_without_flag(flag),
    )


def _recent() -> Key:
    return _Indexed(lambda c: c.recent, lambda s: s.recent)


def _uids(uids: AbstractSet[int]) -> Key:
    return _Indexed(lambda c: c.uid in uids, lambda s: uids)


@attrs.frozen
class Search:
    """A parsed search: its keys, and whether it used MODSEQ (RFC 7162 §3.1.5)."""

    key: Key
    uses_modseq: bool

    def predicate(self, c: Candidate) -> bool:
        """Whether one message matches (the meaning :meth:`matching` computes in bulk)."""
        return self.key.test(c)

    def matching(self, folder: IFolder, view: Sequence[int], recent: AbstractSet[int]) -> list[int]:
        """The UIDs of ``view`` that match and are still in ``folder``, ascending."""
        scope = Scope(folder, view, recent)
        return sorted(self.key.select(scope, None))

    @inlineCallbacks
    def matching_later(
        self, folder: IFolder, view: Sequence[int], recent: AbstractSet[int]
    ) -> Deferred[list[int]]:
        """:meth:`matching`, with BODY and TEXT tested by the store off the reactor thread
        (:meth:`IFolder.filter_contents`), on the messages the indexed keys of a top-level
        conjunction let through."""
        bodies = list(_bodies(self.key))
        if bodies:
            scope = Scope(folder, view, recent)
            within: set[int] | None = None
            for key in self.key.keys if isinstance(self.key, _And) else []:
                if key.cost == 0:
                    within = key.select(scope, within)
            tested = scope.within(within)
            for body in bodies:
                body.found = yield folder.filter_contents(sorted(tested), body.holds)
                body.tested = tested
        return self.matching(folder, view, recent)  # the folder as it is now


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

    def all(self) -> Key:
        keys = []
        while self.pos < len(self.tokens):
            keys.append(self.key())
        if not keys:
            raise ParseError("empty search")
        return keys[0] if len(keys) == 1 else _And(keys)

    def key(self) -> Key:
        self.keys += 1
        if self.keys > MAX_KEYS:
            raise ParseError("search too complex")
        tok = self.next()
        if isinstance(tok, list):
            sub = _Parser(tok, self.count, self.uids, self.saved)
            sub.keys = self.keys
            key = sub.all()
            self.keys = sub.keys
            self.uses_modseq |= sub.uses_modseq
            return key
        if not isinstance(tok, Atom):
            raise ParseError("expected a search key")
        name = tok.upper()
        if name == "ALL":
            return _All()
        if name in _FLAG_KEYS:
            flag, want = _FLAG_KEYS[name]
            return _flag(flag) if want else _Not(_flag(flag))
        if name == "NEW":
            return _And([_recent(), _Not(_flag("\\Seen"))])
        if name == "OLD":
            return _Not(_recent())
        if name == "RECENT":
            return _recent()
        if name in ("KEYWORD", "UNKEYWORD"):
            word = astring(self.next()).decode("utf-8", "replace")
            return _flag(word) if name == "KEYWORD" else _Not(_flag(word))
        if name in _HEADER_KEYS:
            return _header(name.lower(), self.text())
        if name == "HEADER":
            field, needle = self.text(), self.text()
            if not needle:
                return Key(lambda c: c.has_header(field))
            if field in SEARCH_HEADERS:
                return Key(lambda c: needle in c.header(field).lower())
            return _Costly(lambda c: needle in c.header(field).lower())
        if name in ("BODY", "TEXT"):
            return _Body(self.text().encode("utf-8"), whole=name == "TEXT")
        if name in _DATE_KEYS:
            return self._date(name, parse_date(self.next()))
        if name in ("LARGER", "SMALLER"):
            n = self.number()
            if name == "LARGER":
                return _Indexed(lambda c: c.size > n, lambda s: s.folder.uids_sized(n + 1, None))
            return _Indexed(lambda c: c.size < n, lambda s: s.folder.uids_sized(None, n))
        if name == "$":  # RFC 5182 §2.2: the saved result
            return _uids(self.saved)
        if name == "UID":
            text = astring(self.next()).decode("ascii", "replace")
            if text == "$":
                return _uids(self.saved)
            return _uids(set(resolve_pos_uids(parse_set(text), self.uids)))
        if name == "MODSEQ":  # RFC 7162 §3.1.5: MODSEQ ["entry-name" entry-type] mod-sequence
            if isinstance(
                self.tokens[self.pos : self.pos + 1][0:1] and self.tokens[self.pos], bytes
            ):
                self.next()  # a metadata item name: flags all share the message's MODSEQ
                kind = self.next()
                if not isinstance(kind, Atom) or kind.upper() not in ("PRIV", "SHARED", "ALL"):
                    raise ParseError("MODSEQ entry type must be priv, shared or all")
            n = self.number()
            self.uses_modseq = True
            return Key(lambda c: c.message.modseq >= n)
        if name == "NOT":
            return _Not(self.key())
        if name == "OR":
            a, b = self.key(), self.key()
            return _Or(a, b)
        if name[:1].isdigit() or name[:1] == "*":
            seqs = set(resolve_seq(parse_set(name), self.count))
            uids = self.uids
            return _Indexed(
                lambda c: c.seq in seqs, lambda s: {uids[n - 1] for n in seqs if n <= len(uids)}
            )
        raise ParseError(f"unknown search key {name[:30]}")

    def _date(self, name: str, day: datetime.date) -> Key:
        op = name.removeprefix("SENT")

        def on_day(d: datetime.date | None) -> bool:
            if d is None:
                return False
            return d < day if op == "BEFORE" else (d == day if op == "ON" else d >= day)

        if name.startswith("SENT"):

            def sent(c: Candidate) -> bool:
                parsed = email.utils.parsedate_tz(c.header("date"))
                if parsed is None:
                    return False
                try:
                    return on_day(datetime.date(parsed[0], parsed[1], parsed[2]))
                except ValueError:
                    return False

            return Key(sent)
        # Internal dates, by their UTC day: [start, end) in POSIX seconds.
        midnight = datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp()
        start, end = {
            "BEFORE": (None, midnight),
            "ON": (midnight, midnight + 86400),
            "SINCE": (midnight, None),
        }[op]
        return _Indexed(
            lambda c: on_day(datetime.datetime.fromtimestamp(c.internal_date, datetime.UTC).date()),
            lambda s: s.folder.uids_dated(start, end),
        )


def _header(field: str, needle: str) -> Key:
    """FROM, TO, CC, BCC, SUBJECT: from the store's header index (an empty needle matches
    every message)."""
    if not needle:
        return _All()
    return _Indexed(
        lambda c: needle in c.header(field).lower(),
        lambda s: s.folder.search_headers(field, needle),
    )


class _Body(_Costly):
    """BODY (after the header) or TEXT (the whole message): ``needle`` anywhere in the stored
    octets, ignoring ASCII case (RFC 3501 §6.4.4).

    :meth:`Search.matching_later` has the store test the files off the reactor thread first
    (``found``); without that, each message is read here."""

    def __init__(self, needle: bytes, whole: bool) -> None:
        super().__init__(lambda c: self.holds(c.data))
        self.needle, self.whole = needle, whole
        #: The UIDs the store tested, and those of them that matched.
        self.tested: set[int] = set()
        self.found: set[int] = set()

    def holds(self, data: Buffer) -> bool:
        """Whether ``data`` (a whole message) matches; pure, so worker threads may call it."""
        return contains(data, 0 if self.whole else body_start(data), len(data), self.needle)

    def select(self, scope: Scope, within: set[int] | None) -> set[int]:
        within = scope.within(within)
        untested = within - self.tested  # all, unless the store tested them beforehand
        return (within & self.found) | super().select(scope, untested)


def _bodies(key: Key) -> Iterator[_Body]:
    """The BODY and TEXT keys in ``key``."""
    if isinstance(key, _Body):
        yield key
    for child in key.children():
        yield from _bodies(child)


def body_start(data: Buffer) -> int:
    """Where a message's body begins: after the first empty line (as
    :func:`ourmail.mime.structure.parse` finds it, without parsing the header fields)."""
    if data[:2] == b"\r\n":
        return 2
    sep = data.find(b"\r\n\r\n")
    return len(data) if sep < 0 else sep + 4


def resolve_pos_uids(ranges: list[tuple[int | None, int | None]], uids: Sequence[int]) -> list[int]:
    return [uids[i] for i in resolve_uid(ranges, uids)]


def parse_search(
    tokens: Sequence[Token], count: int, uids: Sequence[int], saved: set[int] | None = None
) -> Search:
    """The search keys in ``tokens`` (after any CHARSET, which the caller takes); ``saved``
    is the SEARCHRES result that ``$`` stands for (RFC 5182)."""
    parser = _Parser(tokens, count, uids, set() if saved is None else saved)
    key = parser.all()
    return Search(key, parser.uses_modseq)
