"""The folder journal ``ourmail-uidlist``: every change to a folder as one appended line.

A folder's in-memory state is the fold of its journal, so a process only reads the lines added
since it last looked, and several processes sharing a folder agree on every UID.  Lines are
tab-separated::

    ourmail-uidlist 2 V<uidvalidity> N<uidnext> M<highestmodseq> G<generation>   first line
    + uid modseq sub info size date base      a message (sub: new|cur; info: flags, "~" = none)
    F uid modseq sub info                     its flags or location changed
    - uid modseq                              it was expunged
    R uid                                     UIDs below this are no longer \\Recent
    S new_mtime_ns cur_mtime_ns               the directories as the writer left them

Writers append only under the folder's exclusive lock.  A process that sees the directories'
modification times differ from the last ``S`` line knows that something other than ourmail
(mutt, Dovecot, a delivery agent) changed the folder and reconciles with a directory scan.
The journal is a cache: when missing or corrupt it is rebuilt from the Maildir with a new, larger
UIDVALIDITY (RFC 3501 §2.3.1.1).

The fold also keeps the indexes SEARCH answers from without a pass over the messages: the UIDs
holding each info letter (a flag or keyword) and the UIDs lacking ``S`` or ``T`` (UNSEEN and
UNDELETED, the common negated keys), kept as each line is applied, and the UIDs in
internal-date and size order, sorted when first asked for after a change.
"""

from __future__ import annotations

import bisect
import secrets
from array import array
from collections.abc import Iterable, Sequence, Set

import attrs

from ourmail.store.entrytable import NO_INFO, Entry, EntryTable

MAGIC = "ourmail-uidlist"
VERSION = "2"
#: Info letters whose absence the fold indexes too: ``S`` (\Seen) and ``T`` (\Deleted).
LACKING = "ST"
#: Changes kept in memory for sessions catching up; older ones force a full comparison.
CHANGE_LOG = 100_000


class CorruptJournal(ValueError):
    """A line that cannot be applied; the journal must be rebuilt."""


@attrs.define
class FolderState:
    """The fold of a journal."""

    uidvalidity: int = 0
    uidnext: int = 1
    highestmodseq: int = 1
    first_recent: int = 1
    entries: EntryTable = attrs.Factory(EntryTable)
    #: The directory stamp written by the last writer, or None.
    stamp: tuple[int, int] | None = None
    #: (modseq, uid) of recent changes, ascending, for sessions catching up.
    changes: list[tuple[int, int]] = attrs.Factory(list)
    #: modseq below which ``changes`` is incomplete.
    changes_floor: int = 0
    lines: int = 0
    #: The highest UID of a ``+`` line so far: they must ascend.
    last_added: int = 0
    #: Sum of the sizes of the messages present (for quota).
    total_size: int = 0
    #: Info letter (``S``, ``F``, ``a`` …) -> the UIDs whose file names carry it.
    by_letter: dict[str, set[int] | PendingSet] = attrs.Factory(dict)
    #: Letter of ``LACKING`` -> the UIDs present whose file names do not carry it.
    lacking: dict[str, set[int] | PendingSet] = attrs.Factory(lambda: {ch: set() for ch in LACKING})
    #: The UIDs in internal-date and in size order; None until first asked for.
    _by_date: _Ordered | None = None
    _by_size: _Ordered | None = None
    #: Base name -> UID; None until first asked for (:attr:`by_base`).
    _by_base: dict[str, int] | None = None
    #: Whether ``changes`` may be out of modseq order (a compacted journal lists its messages
    #: by UID): sorted before it is read.
    _unsorted: bool = False

    @property
    def by_base(self) -> dict[str, int]:
        """The UID of each message by its Maildir base name (made when first asked for)."""
        if self._by_base is None:
            self._by_base = self.entries.base_index()
        return self._by_base

    def _changed(self, modseq: int, uid: int) -> None:
        self.highestmodseq = max(self.highestmodseq, modseq)
        changes = self.changes
        if changes and modseq < changes[-1][0]:
            self._unsorted = True
        changes.append((modseq, uid))
        if len(changes) > CHANGE_LOG:
            self._sort_changes()
            cut = len(changes) // 2
            # Never lowered: the changes below it may have been cut before (RFC 7162 §3.1).
            self.changes_floor = max(self.changes_floor, changes[cut - 1][0])
            del changes[:cut]

    def _sort_changes(self) -> None:
        if self._unsorted:
            self.changes.sort()
            self._unsorted = False

    def recent_changes(self, most: int) -> tuple[list[tuple[int, int]], int]:
        """The last ``most`` changes in modseq order, and the modseq below which they are
        incomplete (for a checkpoint)."""
        self._sort_changes()
        kept = self.changes[-most:] if most else []
        floor = self.changes_floor
        if len(kept) < len(self.changes):
            floor = max(floor, self.changes[len(self.changes) - len(kept) - 1][0])
        return kept, floor

    def restore_changes(self, changes: list[tuple[int, int]]) -> None:
        """Take the changes of a checkpoint (in modseq order, as :meth:`recent_changes`
        gave them)."""
        self.changes, self._unsorted = changes, False

    def apply(self, line: str) -> None:
        """Apply one journal line (without its newline)."""
        self.lines += 1
        f = line.split("\t")
        try:
            kind = f[0]
            if kind == MAGIC:
                if f[1] != VERSION:
                    raise CorruptJournal(f"unknown journal version {f[1]!r}")
                fields = {x[0]: int(x[1:]) for x in f[2:]}
                self.uidvalidity = fields["V"]
                self.uidnext = max(self.uidnext, fields["N"])
                self.highestmodseq = max(self.highestmodseq, fields["M"])
                self.changes_floor = self.highestmodseq
            elif kind == "+":
                uid, modseq = int(f[1]), int(f[2])
                entry = Entry(uid, f[7], f[3], _info(f[4]), modseq, int(f[5]), float(f[6]))
                if uid <= self.last_added:
                    raise CorruptJournal(f"UID {uid} is not above {self.last_added}")
                self.last_added = uid
                self.entries[uid] = entry
                if self._by_base is not None:
                    self._by_base[entry.base] = uid
                self.total_size += entry.size
                self._letters(uid, None, entry.info or "")
                if self._by_date is not None:
                    self._by_date.insert(entry.date, uid)
                if self._by_size is not None:
                    self._by_size.insert(entry.size, uid)
                self.uidnext = max(self.uidnext, uid + 1)
                self._changed(modseq, uid)
            elif kind == "F":
                uid, modseq = int(f[1]), int(f[2])
                # A modseq is spent even when the message is unknown here: a state built
                # from the journal's tail alone (a delivery batch, MaildirFolder.place) must
                # still number its changes above it (RFC 7162 §3.1: modseqs only grow).
                self.highestmodseq = max(self.highestmodseq, modseq)
                known = self.entries.get(uid)
                if known is not None:
                    info = _info(f[4])
                    self._letters(uid, known.info or "", info or "")
                    known.sub, known.info = f[3], info
                    if modseq > known.modseq:
                        known.modseq = modseq
                        self._changed(modseq, uid)
            elif kind == "-":
                uid, modseq = int(f[1]), int(f[2])
                self.highestmodseq = max(self.highestmodseq, modseq)
                gone = self.entries.pop(uid, None)
                if gone is not None:
                    if self._by_base is not None:
                        self._by_base.pop(gone.base, None)
                    self.total_size -= gone.size
                    self._letters(uid, gone.info or "", None)
                    for order in (self._by_date, self._by_size):
                        if order is not None:
                            order.stale += 1
                    self._changed(modseq, uid)
            elif kind == "R":
                self.first_recent = max(self.first_recent, int(f[1]))
            elif kind == "S":
                self.stamp = (int(f[1]), int(f[2]))
            else:
                raise CorruptJournal(f"unknown journal line {line[:60]!r}")
        except (IndexError, ValueError, KeyError) as e:
            raise CorruptJournal(f"bad journal line {line[:60]!r}") from e

    def _letters(self, uid: int, old: str | None, new: str | None) -> None:
        """Move ``uid`` from the letter sets of its ``old`` info to those of ``new`` (None:
        not present, before it is added or after it is expunged)."""
        for ch in old or "":
            self.by_letter[ch].discard(uid)
        for ch in new or "":
            self.by_letter.setdefault(ch, set()).add(uid)
        for ch, lacking in self.lacking.items():
            if new is None or ch in new:
                lacking.discard(uid)
            else:
                lacking.add(uid)

    def with_letter(self, letter: str) -> set[int]:
        """The UIDs whose info carries ``letter`` (the caller must not change the set)."""
        uids = self.by_letter.get(letter, _EMPTY)
        if isinstance(uids, PendingSet):
            uids = self.by_letter[letter] = uids.made()
        return uids

    def letter_sets(self) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
        """Every letter's set of UIDs, and every ``LACKING`` letter's set of UIDs lacking it
        (for a checkpoint; the caller must not change them)."""
        for letter in list(self.by_letter):
            self.with_letter(letter)
        for letter in LACKING:
            self.without_letter(letter)
        return self.by_letter, self.lacking  # type: ignore[return-value]

    def without_letter(self, letter: str) -> Set[int]:
        """The UIDs present whose info lacks ``letter``: kept for the letters of ``LACKING``,
        the complement of :meth:`with_letter` for the others (the caller must not change
        the set)."""
        if letter in self.lacking:
            uids = self.lacking[letter]
            if isinstance(uids, PendingSet):
                uids = self.lacking[letter] = uids.made()
            return uids
        return self.entries.keys() - self.with_letter(letter)

    def _order(self, key: str) -> _Ordered:
        """The date (``"date"``) or size (``"size"``) order, each sorted afresh when first
        asked for or when many of its UIDs have been expunged."""
        order = self._by_date if key == "date" else self._by_size
        if order is None or order.stale > max(1000, len(self.entries) // 4):
            order = _Ordered.of(self.entries, key)
            if key == "date":
                self._by_date = order
            else:
                self._by_size = order
        return order

    def date_order(self) -> tuple[Sequence[float], Sequence[int]]:
        """The internal dates in ascending order, and the UIDs they belong to (for a
        checkpoint; the caller must not change the lists)."""
        order = self._order("date")
        if order.stale:
            order = self._by_date = _Ordered.of(self.entries, "date")
        return order.keys, order.uids

    def restore_date_order(self, keys: array[float], uids: array[int]) -> None:
        """Take the date order of a checkpoint (as :meth:`date_order` gave it), kept as
        arrays: they support what the order does with lists, and need no conversion."""
        self._by_date = _Ordered(keys, uids)

    def dated(self, start: float | None, end: float | None) -> set[int]:
        """UIDs present with ``start <= internal date < end`` (an open end when None)."""
        return self._order("date").between(start, end, self.entries.keys())

    def sized(self, low: int | None, high: int | None) -> set[int]:
        """UIDs present with ``low <= size < high`` (an open end when None)."""
        return self._order("size").between(low, high, self.entries.keys())

    def ordered(self, key: str) -> list[int]:
        """The UIDs present by internal date (``"date"``) or size (``"size"``), ascending,
        equal keys by UID (a fresh list)."""
        order = self._order(key)
        if not order.stale:
            return order.uids.tolist() if isinstance(order.uids, array) else list(order.uids)
        present = self.entries
        return [u for u in order.uids if u in present]

    def changes_since(self, modseq: int) -> list[int] | None:
        """UIDs changed, added or expunged after ``modseq``; None if that is too far back."""
        if modseq < self.changes_floor:
            return None
        self._sort_changes()
        i = bisect.bisect_right(self.changes, (modseq, 1 << 62))
        return [uid for _, uid in self.changes[i:]]


_EMPTY: set[int] = set()


class PendingSet:
    """A set of UIDs from a checkpoint, made into a ``set`` when first asked for (a set of
    100,000 numbers takes some 8 ms to make); the changes made before that are kept in order
    and applied then."""

    #: Changes kept at most before the set is made anyway (a process that never asks, such
    #: as an MX worker, must not queue them without end).
    MOST = 4096

    def __init__(self, uids: Iterable[int]) -> None:
        self._uids = uids
        self._changes: list[tuple[bool, int]] = []
        self._made: set[int] | None = None

    def add(self, uid: int) -> None:
        if self._made is not None:
            self._made.add(uid)
        else:
            self._queue(True, uid)

    def discard(self, uid: int) -> None:
        if self._made is not None:
            self._made.discard(uid)
        else:
            self._queue(False, uid)

    def _queue(self, added: bool, uid: int) -> None:
        self._changes.append((added, uid))
        if len(self._changes) > self.MOST:
            self.made()

    def made(self) -> set[int]:
        """The set, with every change so far (the same set from then on)."""
        if self._made is None:
            uids = set(self._uids)
            for added, uid in self._changes:
                if added:
                    uids.add(uid)
                else:
                    uids.discard(uid)
            self._made, self._changes = uids, []
        return self._made


class _Ordered:
    """UIDs ordered by a number (internal date, size), for range look-ups by bisection.

    Expunged UIDs stay until the next re-sort (``stale`` counts them); look-ups leave them out.
    """

    def __init__(self, keys: list[float] | array[float], uids: list[int] | array[int]) -> None:
        self.keys, self.uids = keys, uids
        self.stale = 0

    @classmethod
    def of(cls, entries: EntryTable, key: str) -> _Ordered:
        """The UIDs of ``entries`` by ``key`` (an Entry attribute, ``date`` or ``size``),
        equal keys by UID.  Sorted as positions keyed by a list's ``__getitem__`` (a stable
        sort of the UIDs in ascending order), several times faster than sorting pairs."""
        uids = entries.uid_list()
        values = entries.values_of(key)
        positions = sorted(range(len(uids)), key=values.__getitem__)
        return cls([values[i] for i in positions], [uids[i] for i in positions])

    def insert(self, key: float, uid: int) -> None:
        i = bisect.bisect_right(self.keys, key)
        self.keys.insert(i, key)
        self.uids.insert(i, uid)

    def between(self, low: float | None, high: float | None, present: Set[int]) -> set[int]:
        lo = 0 if low is None else bisect.bisect_left(self.keys, low)
        hi = len(self.keys) if high is None else bisect.bisect_left(self.keys, high)
        found = set(self.uids[lo:hi])
        return found & present if self.stale else found


def _info(field: str) -> str | None:
    return None if field == NO_INFO else field


def header(uidvalidity: int, uidnext: int, modseq: int) -> str:
    """The first line of a journal written afresh, with a new random generation number
    (``G``) that tells this journal from any earlier one (``checkpoint.py``)."""
    return f"{MAGIC}\t{VERSION}\tV{uidvalidity}\tN{uidnext}\tM{modseq}\tG{secrets.randbits(62)}\n"


def added(e: Entry) -> str:
    info = NO_INFO if e.info is None else e.info
    return f"+\t{e.uid}\t{e.modseq}\t{e.sub}\t{info}\t{e.size}\t{e.date:.3f}\t{e.base}\n"


def flagged(uid: int, modseq: int, sub: str, info: str | None) -> str:
    return f"F\t{uid}\t{modseq}\t{sub}\t{NO_INFO if info is None else info}\n"


def expunged(uid: int, modseq: int) -> str:
    return f"-\t{uid}\t{modseq}\n"


def recent_claimed(uid: int) -> str:
    return f"R\t{uid}\n"


def stamped(stamp: tuple[int, int]) -> str:
    return f"S\t{stamp[0]}\t{stamp[1]}\n"
