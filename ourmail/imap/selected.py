"""The selected mailbox as one session sees it (RFC 3501 §2.3.1.2, §7.4.1, §5.2).

A session keeps its own view: the UIDs it has announced (its message sequence numbers) and the
folder modseq it has caught up to.  :meth:`SelectedMailbox.updates` asks the folder what changed
since then and produces the untagged EXISTS, RECENT, EXPUNGE and FETCH (FLAGS) responses; with
QRESYNC on, VANISHED instead of EXPUNGE (RFC 7162 §3.2.10), and under IMAP4rev2 no RECENT
(RFC 9051 removes ``\\Recent``).
EXPUNGE responses are held back while the caller says they are not allowed (during FETCH, STORE
and SEARCH, RFC 3501 §7.4.1), so sequence numbers never shift under a client mid-command.
Selecting costs a copy of the UID list, not a pass over the messages.
"""

from __future__ import annotations

import bisect

from ourmail.imap.sequence import Ranges, format_set
from ourmail.imap.wire import flag_list
from ourmail.interfaces import IFolder


class SelectedMailbox:
    def __init__(self, folder: IFolder, readonly: bool, recent: set[int]) -> None:
        self.folder = folder
        self.readonly = readonly
        self.recent = recent
        self.view: list[int] = list(folder.uids())
        self._modseq = folder.highestmodseq
        #: uid -> modseq of a change this session made and already reported itself
        self._own: dict[int, int] = {}
        #: RFC 7162 §3.2: with CONDSTORE on, flag updates carry the message's MODSEQ.
        self.condstore = False
        #: RFC 7162 §3.2.10: with QRESYNC on, expunges are reported as VANISHED.
        self.qresync = False
        #: IMAP4rev2 (RFC 9051): no RECENT responses.
        self.rev2 = False
        #: RFC 5182 SEARCHRES: the UIDs of the last SEARCH ... RETURN (SAVE), for ``$``.
        self.saved: set[int] = set()
        #: The mailbox name of a folder of the shared namespace (RFC 2342); "" for the
        #: user's own.
        self.shared = ""
        #: The user may no longer read this shared folder: nothing more is reported from it.
        self.revoked = False

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.view, uid)
        return i + 1 if i < len(self.view) and self.view[i] == uid else None

    def flags_of(self, uid: int, flags: frozenset[str]) -> frozenset[str]:
        """``flags`` plus ``\\Recent`` when this session holds the message as recent."""
        return flags | {"\\Recent"} if uid in self.recent else flags

    def reported(self, uid: int, modseq: int) -> None:
        """This session told the client about this change itself (STORE, FETCH setting \\Seen)."""
        self._own[uid] = modseq

    def updates(self, expunge_ok: bool, sync: bool = True) -> list[bytes]:
        """Untagged responses that bring the client's view up to date; ``sync`` False when
        the folder was synced a moment ago (in the same reactor turn)."""
        folder = self.folder
        if self.revoked:
            return []
        if sync:
            folder.sync()
        if folder.highestmodseq == self._modseq:
            return []
        current = folder.uids()
        changed = folder.changes_since(self._modseq)
        if changed is not None and self._all_own(changed, folder.highestmodseq):
            candidates = []  # a bulk STORE of this session's own: nothing to tell
        else:
            candidates = sorted(set(self.view) | set(current) if changed is None else set(changed))

        def present(uid: int) -> bool:
            i = bisect.bisect_left(current, uid)
            return i < len(current) and current[i] == uid

        out: list[bytes] = []
        removed = [u for u in candidates if not present(u) and self.seq_of(u) is not None]
        if removed and expunge_ok:
            out += self.forget(removed)
        for uid in candidates:
            seq = self.seq_of(uid)
            if seq is None or not present(uid):
                continue
            msg = folder.message(uid)
            if self._own.get(uid) != msg.modseq:
                modseq = b" MODSEQ (%d)" % msg.modseq if self.condstore else b""
                flags = flag_list(self.flags_of(uid, msg.flags))
                out.append(b"* %d FETCH (FLAGS %s%s)" % (seq, flags, modseq))
        top = self.view[-1] if self.view else 0
        new = current[bisect.bisect_right(current, top) :]
        if new:
            if not self.readonly:
                self.recent.update(folder.claim_recent())
            self.view.extend(new)
            out.append(b"* %d EXISTS" % len(self.view))
            if not self.rev2:
                out.append(b"* %d RECENT" % len(self.recent))
        if not removed or expunge_ok:
            self._modseq = folder.highestmodseq
            self._own.clear()
        return out

    def _all_own(self, changed: list[int], top: int) -> bool:
        """Whether ``changed`` (one UID per change) is exactly the changes this session made
        and reported itself: one each, the last of them the folder's highest modseq."""
        own = self._own
        return (
            len(changed) == len(own)
            and max(own.values(), default=0) == top
            and own.keys() == set(changed)
        )

    def forget(self, uids: list[int]) -> list[bytes]:
        """Drop expunged UIDs from the view; the EXPUNGE responses, in RFC 3501 §7.4.1 order,
        or one VANISHED response (RFC 7162 §3.2.10)."""
        gone = set(uids)
        out = []
        removed = 0
        if self.qresync:
            known = [u for u in self.view if u in gone]
            self.view = [u for u in self.view if u not in gone]
            self.recent -= gone
            return [b"* VANISHED " + format_set(known).encode()] if known else []
        for pos, uid in enumerate(self.view):
            if uid in gone:
                out.append(b"* %d EXPUNGE" % (pos + 1 - removed))
                removed += 1
                self.recent.discard(uid)
        self.view = [u for u in self.view if u not in gone]
        return out

    def vanished_since(self, modseq: int, known: Ranges | None) -> str:
        """The UIDs, as a set, that the client may still hold but were expunged after
        ``modseq`` (RFC 7162 §3.2.5.1, §3.2.6), limited to ``known`` when given.  When the
        folder no longer knows that far back, every absent UID below UIDNEXT: the RFC lets the
        server include UIDs the client never had.  Computed on ranges, never UID by UID."""
        folder = self.folder
        uids = folder.uids()
        changed = folder.changes_since(modseq)
        if changed is None:
            gaps, prev = [], 0
            for uid in [*uids, folder.uidnext]:
                if uid > prev + 1:
                    gaps.append((prev + 1, uid - 1))
                prev = uid
        else:
            present = set(uids)
            gone = sorted({u for u in changed if u not in present})
            gaps = [(u, u) for u in gone]
        if known is not None:
            top = max(folder.uidnext - 1, 1)
            limits = [(min(lo or top, hi or top), max(lo or top, hi or top)) for lo, hi in known]
            gaps = _intersect(_merged(gaps), _merged(limits))
        return _ranges_text(gaps)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges sorted, with overlapping and adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _intersect(x: list[tuple[int, int]], y: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The intersection of two merged range lists, in one pass over both."""
    out, i, j = [], 0, 0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    """Ranges as a sequence set (``3:5,9``)."""
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in _merged(ranges))
