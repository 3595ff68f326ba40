"""The selected mailbox as one session sees it (RFC 3501 §2.3.1.2, §7.4.1, §5.2).

A session keeps its own view: the UIDs it has announced (its message sequence numbers) and the
folder modseq it has caught up to.  :meth:`SelectedMailbox.updates` asks the folder what changed
since then and produces the untagged EXISTS, RECENT, EXPUNGE and FETCH (FLAGS) responses.
EXPUNGE responses are held back while the caller says they are not allowed (during FETCH, STORE
and SEARCH, RFC 3501 §7.4.1), so sequence numbers never shift under a client mid-command.
Selecting costs a copy of the UID list, not a pass over the messages.
"""

from __future__ import annotations

import bisect

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

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.view, uid)
        return i + 1 if i < len(self.view) and self.view[i] == uid else None

    def flags_of(self, uid: int, flags: frozenset[str]) -> frozenset[str]:
        """``flags`` plus ``\\Recent`` when this session holds the message as recent."""
        return flags | {"\\Recent"} if uid in self.recent else flags

    def reported(self, uid: int, modseq: int) -> None:
        """This session told the client about this change itself (STORE, FETCH setting \\Seen)."""
        self._own[uid] = modseq

    def updates(self, expunge_ok: bool) -> list[bytes]:
        """Untagged responses that bring the client's view up to date."""
        folder = self.folder
        folder.sync()
        if folder.highestmodseq == self._modseq:
            return []
        current = folder.uids()
        changed = folder.changes_since(self._modseq)
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
            out.append(b"* %d RECENT" % len(self.recent))
        if not removed or expunge_ok:
            self._modseq = folder.highestmodseq
            self._own.clear()
        return out

    def forget(self, uids: list[int]) -> list[bytes]:
        """Drop expunged UIDs from the view; the EXPUNGE responses, in RFC 3501 §7.4.1 order."""
        gone = set(uids)
        out = []
        removed = 0
        for pos, uid in enumerate(self.view):
            if uid in gone:
                out.append(b"* %d EXPUNGE" % (pos + 1 - removed))
                removed += 1
                self.recent.discard(uid)
        self.view = [u for u in self.view if u not in gone]
        return out
