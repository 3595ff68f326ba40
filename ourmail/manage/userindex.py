"""A sorted, read-only index of the local accounts and aliases for the admin console's
listings, rebuilt only when ``accounts.json`` changes (its inode, modification time and size,
as :class:`~ourmail.auth.accounts.AccountDB` notices changes).

At 200,000 users the file is tens of megabytes of JSON: parsing and sorting it per request
would cost a second.  The index parses it once per change, in the calling (worker) thread,
and keeps only the addresses: all of them sorted, and per domain.
"""

from __future__ import annotations

import bisect
import heapq
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import attrs

from ourmail.auth.accounts import FILE_NAME, AccountDB


@attrs.frozen
class Snapshot:
    """The accounts and aliases at one version of the file."""

    #: Every user's address, sorted.
    users: Sequence[str]
    #: Domain -> its users' addresses, sorted.
    by_domain: dict[str, list[str]]
    #: Alias address -> its targets, sorted by address.
    aliases: dict[str, tuple[str, ...]]

    def users_in(self, domains: Sequence[str] | None) -> Sequence[str]:
        """The sorted addresses of the users of ``domains`` (None: all)."""
        if domains is None:
            return self.users
        lists = [self.by_domain.get(d, []) for d in dict.fromkeys(domains)]
        return lists[0] if len(lists) == 1 else list(heapq.merge(*lists))

    def page(
        self, domains: Sequence[str] | None, text: str, offset: int, limit: int
    ) -> tuple[list[str], int]:
        """At most ``limit`` users of ``domains`` containing ``text`` from the ``offset``-th
        match, and how many match in all."""
        chosen = self.users_in(domains)
        if not text:
            return list(chosen[offset : offset + limit]), len(chosen)
        matches = [a for a in chosen if text in a]
        return matches[offset : offset + limit], len(matches)

    def has_user(self, address: str) -> bool:
        """Whether ``address`` is a user (a binary search of the sorted list)."""
        at = bisect.bisect_left(self.users, address)
        return at < len(self.users) and self.users[at] == address


class UserIndex:
    """The current :class:`Snapshot` of ``<data>/accounts.json`` (blocking: call in a thread)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._snapshot = Snapshot((), {}, {})

    def current(self) -> Snapshot:
        """The snapshot of the file as it is now, rebuilt if it changed."""
        with self._lock:
            try:
                st = os.stat(self.data_dir / FILE_NAME)
            except FileNotFoundError:
                self._stamp, self._snapshot = None, Snapshot((), {}, {})
                return self._snapshot
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._snapshot = self._build()
                self._stamp = stamp
            return self._snapshot

    def _build(self) -> Snapshot:
        db = AccountDB(self.data_dir)  # a reader of its own: the file is parsed once here
        users = db.users()  # sorted
        by_domain: dict[str, list[str]] = {}
        for address in users:
            by_domain.setdefault(address.rpartition("@")[2], []).append(address)
        aliases = {a: tuple(t) for a, t in sorted(db.aliases().items())}
        return Snapshot(tuple(users), by_domain, aliases)
