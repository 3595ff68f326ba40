"""The folder journal ``ourmail-uidlist``: every change to a folder as one appended line.

A folder's in-memory state is the fold of its journal, so a process only reads the lines added
since it last looked, and several processes sharing a folder agree on every UID.  Lines are
tab-separated::

    ourmail-uidlist 2 V<uidvalidity> N<uidnext> M<highestmodseq>      first line
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
"""

from __future__ import annotations

import bisect

import attrs

MAGIC = "ourmail-uidlist"
VERSION = "2"
NO_INFO = "~"
#: Changes kept in memory for sessions catching up; older ones force a full comparison.
CHANGE_LOG = 100_000


class CorruptJournal(ValueError):
    """A line that cannot be applied; the journal must be rebuilt."""


@attrs.define(slots=True)
class Entry:
    uid: int
    base: str
    sub: str
    #: Maildir info flag letters, or None when the file name has no ``:2,`` part.
    info: str | None
    modseq: int
    size: int
    date: float

    @property
    def filename(self) -> str:
        return self.base if self.info is None else f"{self.base}:2,{self.info}"


@attrs.define
class FolderState:
    """The fold of a journal."""

    uidvalidity: int = 0
    uidnext: int = 1
    highestmodseq: int = 1
    first_recent: int = 1
    entries: dict[int, Entry] = attrs.Factory(dict)
    by_base: dict[str, int] = attrs.Factory(dict)
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

    def _changed(self, modseq: int, uid: int) -> None:
        self.highestmodseq = max(self.highestmodseq, modseq)
        self.changes.append((modseq, uid))
        if len(self.changes) > CHANGE_LOG:
            cut = len(self.changes) // 2
            self.changes_floor = self.changes[cut - 1][0]
            del self.changes[:cut]

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
                self.by_base[entry.base] = uid
                self.total_size += entry.size
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
                    known.sub, known.info = f[3], _info(f[4])
                    if modseq > known.modseq:
                        known.modseq = modseq
                        self._changed(modseq, uid)
            elif kind == "-":
                uid, modseq = int(f[1]), int(f[2])
                self.highestmodseq = max(self.highestmodseq, modseq)
                gone = self.entries.pop(uid, None)
                if gone is not None:
                    self.by_base.pop(gone.base, None)
                    self.total_size -= gone.size
                    self._changed(modseq, uid)
            elif kind == "R":
                self.first_recent = max(self.first_recent, int(f[1]))
            elif kind == "S":
                self.stamp = (int(f[1]), int(f[2]))
            else:
                raise CorruptJournal(f"unknown journal line {line[:60]!r}")
        except (IndexError, ValueError, KeyError) as e:
            raise CorruptJournal(f"bad journal line {line[:60]!r}") from e

    def changes_since(self, modseq: int) -> list[int] | None:
        """UIDs changed, added or expunged after ``modseq``; None if that is too far back."""
        if modseq < self.changes_floor:
            return None
        i = bisect.bisect_right(self.changes, (modseq, 1 << 62))
        return [uid for _, uid in self.changes[i:]]


def _info(field: str) -> str | None:
    return None if field == NO_INFO else field


def header(uidvalidity: int, uidnext: int, modseq: int) -> str:
    return f"{MAGIC}\t{VERSION}\tV{uidvalidity}\tN{uidnext}\tM{modseq}\n"


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
