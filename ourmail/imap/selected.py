"""The selected mailbox as one session sees it (RFC 3501 §2.3.1.2, §7.4.1, §5.2).

A session keeps its own view: the UIDs it has announced (its message sequence numbers) and the
flags it last reported.  :meth:`SelectedMailbox.updates` compares that view with the folder and
produces the untagged EXISTS, RECENT, EXPUNGE and FETCH (FLAGS) responses; EXPUNGE responses are
held back while the caller says they are not allowed (during FETCH, STORE and SEARCH, RFC 3501
§7.4.1), so sequence numbers never shift under a client mid-command.
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
        self.flags: dict[int, frozenset[str]] = {u: folder.message(u).flags for u in self.view}
        self._seen_modseq = folder.highestmodseq

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.view, uid)
        return i + 1 if i < len(self.view) and self.view[i] == uid else None

    def flags_of(self, uid: int, flags: frozenset[str]) -> frozenset[str]:
        """``flags`` plus ``\\Recent`` when this session holds the message as recent."""
        return flags | {"\\Recent"} if uid in self.recent else flags

    def updates(self, expunge_ok: bool) -> list[bytes]:
        """Untagged responses that bring the client's view up to date."""
        self.folder.sync()
        if self.folder.highestmodseq == self._seen_modseq:
            return []
        current = set(self.folder.uids())
        out: list[bytes] = []
        removed = [u for u in self.view if u not in current]
        if removed and expunge_ok:
            out += self.forget(removed)
        for seq, uid in enumerate(self.view, 1):
            if uid in current:
                flags = self.folder.message(uid).flags
                if flags != self.flags[uid]:
                    self.flags[uid] = flags
                    out.append(
                        b"* %d FETCH (FLAGS %s)" % (seq, flag_list(self.flags_of(uid, flags)))
                    )
        known = set(self.view)
        new = [u for u in self.folder.uids() if u not in known]
        if new:
            if not self.readonly:
                self.recent.update(self.folder.take_recent(new))  # type: ignore[attr-defined]
            self.view.extend(new)
            for uid in new:
                self.flags[uid] = self.folder.message(uid).flags
            out.append(b"* %d EXISTS" % len(self.view))
            out.append(b"* %d RECENT" % len(self.recent))
        if not removed or expunge_ok:
            self._seen_modseq = self.folder.highestmodseq
        return out

    def forget(self, uids: list[int]) -> list[bytes]:
        """Drop expunged UIDs from the view; the EXPUNGE responses, in RFC 3501 §7.4.1 order."""
        gone = set(uids)
        out = []
        removed = 0
        for pos, uid in enumerate(list(self.view)):
            if uid in gone:
                out.append(b"* %d EXPUNGE" % (pos + 1 - removed))
                removed += 1
                self.flags.pop(uid, None)
                self.recent.discard(uid)
        self.view = [u for u in self.view if u not in gone]
        return out
