"""An in-memory store: every interface of ``ourmail.interfaces``, nothing on disk.

For unit tests and as the smallest complete example of a store plugin (docs/plugins.md).
Messages live in dictionaries and vanish with the process, so never use it for real mail.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ourmail.interfaces import (
    BadFolderName,
    FlagMode,
    FolderExists,
    IFolder,
    IMailStore,
    IStoredMessage,
    IUserStore,
    MessageSource,
    NoSuchFolder,
    StoreError,
)
from ourmail.mailflags import SYSTEM_FLAGS, canonical_flag
from ourmail.mime.structure import Buffer, to_crlf
from ourmail.mime.summary import Summary, summarize


def _bytes_of(source: MessageSource) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, os.PathLike):
        return Path(source).read_bytes()
    return source.read()


@implementer(IStoredMessage)
class MemoryMessage:
    def __init__(self, uid: int, data: bytes, flags: frozenset[str], date: float, modseq: int):
        self.uid, self.data, self.flags = uid, data, flags
        self.internal_date, self.modseq = date, modseq
        self.size = len(data)
        self.key = f"{id(self)}"
        self._summary: Summary | None = None

    def read(self) -> bytes:
        return self.data

    def buffer(self) -> bytes:
        return self.data

    def summary(self) -> Summary:
        if self._summary is None:
            self._summary = summarize(self.data)
        return self._summary


@implementer(IFolder)
class MemoryFolder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.uidvalidity = int(time.time())
        self.uidnext = 1
        self.highestmodseq = 1
        self.messages: dict[int, MemoryMessage] = {}
        self._changes: list[tuple[int, int]] = []
        self._recent_from = 1
        self._listeners: list[Callable[[], None]] = []

    @property
    def total_size(self) -> int:
        return sum(m.size for m in self.messages.values())

    def _changed(self, uid: int) -> int:
        self.highestmodseq += 1
        self._changes.append((self.highestmodseq, uid))
        return self.highestmodseq

    def sync(self) -> bool:
        return False

    def uids(self) -> Sequence[int]:
        return sorted(self.messages)

    def keywords(self) -> list[str]:
        return sorted({f for m in self.messages.values() for f in m.flags} - SYSTEM_FLAGS)

    def claim_recent(self) -> list[int]:
        mine = [u for u in self.uids() if u >= self._recent_from]
        self._recent_from = self.uidnext
        return mine

    def recent_count(self) -> int:
        return sum(1 for u in self.messages if u >= self._recent_from)

    def first_unseen(self) -> int | None:
        return next((u for u in self.uids() if "\\Seen" not in self.messages[u].flags), None)

    def unseen_count(self) -> int:
        return sum(1 for m in self.messages.values() if "\\Seen" not in m.flags)

    def changes_since(self, modseq: int) -> list[int] | None:
        i = bisect.bisect_right(self._changes, (modseq, 1 << 62))
        return [uid for _, uid in self._changes[i:]]

    def message(self, uid: int) -> MemoryMessage:
        return self.messages[uid]

    def search_headers(self, field: str, needle: str) -> set[int]:
        return {
            uid
            for uid, msg in self.messages.items()
            if needle in msg.summary().headers.get(field, "").lower()
        }

    def filter_contents(
        self, uids: Iterable[int], test: Callable[[Buffer], bool]
    ) -> Deferred[set[int]]:
        return succeed({u for u in uids if u in self.messages and test(self.messages[u].data)})

    def uids_with_flag(self, flag: str) -> set[int]:
        flag = canonical_flag(flag)
        return {uid for uid, msg in self.messages.items() if flag in msg.flags}

    def uids_without_flag(self, flag: str) -> set[int]:
        flag = canonical_flag(flag)
        return {uid for uid, msg in self.messages.items() if flag not in msg.flags}

    def uids_dated(self, start: float | None, end: float | None) -> set[int]:
        return {
            uid
            for uid, msg in self.messages.items()
            if (start is None or msg.internal_date >= start)
            and (end is None or msg.internal_date < end)
        }

    def uids_sized(self, low: int | None, high: int | None) -> set[int]:
        return {
            uid
            for uid, msg in self.messages.items()
            if (low is None or msg.size >= low) and (high is None or msg.size < high)
        }

    def uids_ordered(self, key: Literal["date", "size"]) -> list[int]:
        if key not in ("date", "size"):
            raise ValueError(f"cannot order by {key!r}")
        if key == "date":
            return sorted(self.messages, key=lambda u: (self.messages[u].internal_date, u))
        return sorted(self.messages, key=lambda u: (self.messages[u].size, u))

    def header_values(self, field: str) -> dict[int, str]:
        return {
            uid: msg.summary().headers.get(field, "").lower().replace("\n", " ")
            for uid, msg in self.messages.items()
        }

    def append(
        self, source: MessageSource, flags: Iterable[str] = (), internal_date: float | None = None
    ) -> Deferred[int]:
        uid = self.uidnext
        self.uidnext += 1
        wanted = frozenset(canonical_flag(f) for f in flags) - {"\\Recent"}
        data = to_crlf(_bytes_of(source))
        date = time.time() if internal_date is None else internal_date
        self.messages[uid] = MemoryMessage(uid, data, wanted, date, self._changed(uid))
        self._notify()
        return succeed(uid)

    def store_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode
    ) -> dict[int, frozenset[str]]:
        wanted = frozenset(canonical_flag(f) for f in flags) - {"\\Recent"}
        result = {}
        for uid in uids:
            msg = self.messages.get(uid)
            if msg is None:
                continue
            new = (
                wanted
                if mode == "="
                else (msg.flags | wanted if mode == "+" else msg.flags - wanted)
            )
            if new != msg.flags:
                msg.flags, msg.modseq = new, self._changed(uid)
            result[uid] = msg.flags
        self._notify()
        return result

    def expunge(self, uids: Iterable[int]) -> list[int]:
        removed = [u for u in uids if self.messages.pop(u, None) is not None]
        for uid in removed:
            self._changed(uid)
        self._notify()
        return removed

    def copy_to(self, uids: Iterable[int], target: IFolder) -> Deferred[list[tuple[int, int]]]:
        pairs: list[tuple[int, int]] = []

        def copied(new: int, old: int) -> None:
            pairs.append((old, new))

        for uid in list(uids):
            msg = self.messages.get(uid)
            if msg is not None:
                target.append(msg.data, msg.flags, msg.internal_date).addCallback(copied, uid)
        return succeed(pairs)

    def move_to(self, uids: Iterable[int], target: IFolder) -> Deferred[list[tuple[int, int]]]:
        def expunge_sources(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
            self.expunge([src for src, _ in pairs])
            return pairs

        return self.copy_to(uids, target).addCallback(expunge_sources)

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback()


@implementer(IUserStore)
class MemoryUserStore:
    def __init__(self, address: str) -> None:
        self.address = address
        self.folders: dict[str, MemoryFolder] = {"INBOX": MemoryFolder("INBOX")}
        self._subscribed: list[str] = []
        self._uses: dict[str, str] = {}

    @staticmethod
    def _name(name: str) -> str:
        if name.upper() == "INBOX":
            return "INBOX"
        if not name or any(not p for p in name.split("/")) or any(ord(c) < 32 for c in name):
            raise BadFolderName(name)
        return name

    def list_folders(self) -> list[str]:
        return ["INBOX", *sorted(n for n in self.folders if n != "INBOX")]

    def folder(self, name: str) -> MemoryFolder:
        try:
            return self.folders[self._name(name)]
        except (KeyError, BadFolderName):
            raise NoSuchFolder(name) from None

    def create_folder(self, name: str, special_use: str | None = None) -> None:
        name = self._name(name.rstrip("/"))
        if name in self.folders:
            raise FolderExists(name)
        parts = name.split("/")
        for depth in range(1, len(parts) + 1):
            self.folders.setdefault("/".join(parts[:depth]), MemoryFolder("/".join(parts[:depth])))
        if special_use:
            self._uses[name] = special_use

    def special_uses(self) -> dict[str, str]:
        return {n: u for n, u in self._uses.items() if n in self.folders}

    def delete_folder(self, name: str) -> None:
        name = self._name(name)
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted")
        if name not in self.folders:
            raise NoSuchFolder(name)
        if any(n.startswith(name + "/") for n in self.folders):
            raise StoreError("delete the child folders first")
        del self.folders[name]
        self._uses.pop(name, None)

    def rename_folder(self, old: str, new: str) -> None:
        old, new = self._name(old), self._name(new)
        if old not in self.folders:
            raise NoSuchFolder(old)
        if new in self.folders:
            raise FolderExists(new)
        if old == "INBOX":
            self.folders[new] = self.folders["INBOX"]
            self.folders["INBOX"] = MemoryFolder("INBOX")
            return
        for name in [n for n in self.folders if n == old or n.startswith(old + "/")]:
            self.folders[new + name[len(old) :]] = self.folders.pop(name)
            if name in self._uses:
                self._uses[new + name[len(old) :]] = self._uses.pop(name)

    def subscriptions(self) -> list[str]:
        return list(self._subscribed)

    def subscribe(self, name: str) -> None:
        if name not in self._subscribed:
            self._subscribed.append(name)

    def unsubscribe(self, name: str) -> None:
        if name in self._subscribed:
            self._subscribed.remove(name)

    def deliver(
        self, source: MessageSource, folder: str = "INBOX", flags: Iterable[str] = ()
    ) -> Deferred[int]:
        return self.folder(folder).append(source, flags)


@implementer(IMailStore)
class MemoryStore:
    def __init__(self) -> None:
        self.users: dict[str, MemoryUserStore] = {}

    def user(self, address: str) -> MemoryUserStore:
        if address not in self.users:
            self.users[address] = MemoryUserStore(address)
        return self.users[address]
