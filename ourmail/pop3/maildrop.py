"""A POP3 session's maildrop (RFC 1939 §5, §6): the INBOX as it was at login, its lock, and what
QUIT does with the messages marked deleted.

* The listing is a snapshot: numbers, sizes and UIDLs come from the store's index (no message
  file is read) and do not change during the session, whatever IMAP or delivery do meanwhile.
* One POP3 session per maildrop: a second gets ``[IN-USE]`` (RFC 2449 §8.1.1) until the first
  ends, while IMAP and delivery go on.
* UIDLs are the message's stored name (or a digest of it), which survives restarts, index
  rebuilds and moves (RFC 1939 §7: "the unique-id of a message ... persists across sessions").
"""

from __future__ import annotations

import contextlib
import hashlib
import re

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks

from ourmail.interfaces import FolderExists, IFolder, IRetention, IUserStore, NoSuchFolder
from ourmail.pop3.policy import HIDDEN

TRASH = "Trash"


_UIDL_RE = re.compile(r"[\x21-\x7e]{1,70}")


def uidl_of(key: str) -> str:
    """A UIDL that stays the same for the life of the message: its stored name when that is a
    valid unique-id (RFC 1939 §7: 1 to 70 characters from 0x21 to 0x7E), else a digest of it."""
    if _UIDL_RE.fullmatch(key):
        return key
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


class MaildropLocks:
    """Which maildrops have a POP3 session (RFC 1939 §8: exclusive access), in this process;
    only the main process serves POP3."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, address: str) -> bool:
        if address in self._held:
            return False
        self._held.add(address)
        return True

    def release(self, address: str) -> None:
        self._held.discard(address)


@attrs.define
class Entry:
    uid: int
    size: int
    uidl: str
    deleted: bool = False


class Maildrop:
    """The messages of one POP3 session, numbered from 1."""

    def __init__(self, user: IUserStore) -> None:
        self.user = user
        self.folder: IFolder = user.folder("INBOX")
        self.folder.sync()
        self.entries = []
        for uid in self.folder.uids():
            msg = self.folder.message(uid)
            if HIDDEN not in msg.flags:
                self.entries.append(Entry(uid, msg.size, uidl_of(msg.key)))

    def live(self) -> list[tuple[int, Entry]]:
        """(number, entry) of the messages not marked deleted."""
        return [(n, e) for n, e in enumerate(self.entries, 1) if not e.deleted]

    @inlineCallbacks
    def update(self, policy: str, retention: IRetention) -> Deferred[int]:
        """RFC 1939 §6: apply the deletions with ``policy`` (``hide``, ``trash`` or
        ``expunge``); fires with how many messages left the POP3 view."""
        folder = self.folder
        folder.sync()
        present = set(folder.uids())
        doomed = [e.uid for e in self.entries if e.deleted and e.uid in present]
        if not doomed:
            return 0
        if policy == "trash":
            pairs = yield folder.move_to(doomed, self._trash())
            return len(pairs)
        hide = doomed
        if policy == "expunge":
            address = self.user.address
            erase = [u for u in doomed if retention.may_erase(address, "INBOX", folder.message(u))]
            folder.expunge(erase)
            hide = [u for u in doomed if u not in erase]  # held: kept, and gone from POP3
        folder.store_flags(hide, [HIDDEN], "+")
        return len(doomed)

    def _trash(self) -> IFolder:
        try:
            return self.user.folder(TRASH)
        except NoSuchFolder:
            with contextlib.suppress(FolderExists):
                self.user.create_folder(TRASH, "\\Trash")
            return self.user.folder(TRASH)
