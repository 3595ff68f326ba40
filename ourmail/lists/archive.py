"""The lists' archives as folders shared with their readers (:class:`ISharedFolders`).

A list's archive is the store user of the list's own address, folder ``INBOX``: distribution
delivers each outgoing copy there.  Who may read it: the members (subscriptions, and the
members of the list's group), its owners and moderators; everyone for a public archive.

IMAP (RFC 2342 shared namespace ``Lists/``) and the webmail ask :meth:`ListArchives.folders`
and :meth:`ListArchives.folder` on every command, so both are answered from memory: a table
of readers read from the list database in a thread, with each group expanded through the
directory, refreshed every few minutes (the service's loop) and at once on :meth:`reload`
(after the lists or their members change).  When the directory cannot be asked, a group's
last expansion is kept.  The folders themselves are opened through the store when asked for
(it keeps open folders in memory, shared by every session, and follows shard moves).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.interfaces import (
    IDirectory,
    IMailStore,
    ISharedFolders,
    SharedFolder,
    StoreError,
)
from ourmail.lists.listdb import ListDB
from ourmail.lists.model import Archive, ListSettings

log = Logger()
T = TypeVar("T")

#: The IMAP shared namespace's prefix and the webmail's heading of the archives.
PREFIX = "Lists"
#: Seconds between two readings of the lists, their members and their groups.
REFRESH_INTERVAL = 300.0


@attrs.frozen
class Readers:
    """Who may read which archive, as of one reading (all addresses lower-cased)."""

    #: List address (lower-cased) -> (the list's address, its title).
    lists: dict[str, tuple[str, str]] = attrs.Factory(dict)
    #: Reader -> the lower-cased addresses of the lists they may read (public ones aside).
    by_reader: dict[str, frozenset[str]] = attrs.Factory(dict)
    #: The lower-cased addresses of the lists whose archive is public.
    public: frozenset[str] = frozenset()


def readers(
    lists: Sequence[tuple[ListSettings, Sequence[str]]], groups: dict[str, Sequence[str]]
) -> Readers:
    """The table of readers of ``lists`` (each with its subscribers' addresses), the members
    of each group being ``groups[group]``."""
    by_reader: dict[str, set[str]] = {}
    public = set()
    titles = {}
    for lst, members in lists:
        key = lst.address.lower()
        titles[key] = (lst.address, lst.display_name)
        if lst.archive is Archive.PUBLIC:
            public.add(key)
            continue
        everyone = (*members, *groups.get(lst.group, ()), *lst.owners, *lst.moderators)
        for reader in everyone:
            by_reader.setdefault(reader.lower(), set()).add(key)
    return Readers(titles, {r: frozenset(s) for r, s in by_reader.items()}, frozenset(public))


@implementer(ISharedFolders)
class ListArchives(Service):
    """The archives of the lists a user may read, as shared folders (read-only)."""

    name = "list-archives"
    prefix = PREFIX

    def __init__(
        self,
        db: ListDB,
        store: IMailStore,
        directory: IDirectory,
        clock: IReactorTime | None = None,
        interval: float = REFRESH_INTERVAL,
        run: Callable[..., Deferred[Any]] = deferToThread,
    ) -> None:
        self.db, self.store, self.directory = db, store, directory
        self.clock, self.interval, self._run = clock, interval, run
        self._readers = Readers()
        #: Group -> its members at the last expansion that succeeded.
        self._groups: dict[str, tuple[str, ...]] = {}
        self._started = 0
        self._applied = 0
        self._loop: LoopingCall | None = None

    # -- ISharedFolders ----------------------------------------------------------------------

    def folders(self, user: str) -> Sequence[SharedFolder]:
        """The archives ``user`` may read now, in address order (from memory)."""
        table = self._readers
        keys = table.by_reader.get(user.lower(), frozenset()) | table.public
        shared = (self._shared(k) for k in sorted(keys))
        return [s for s in shared if s is not None]

    def folder(self, user: str, name: str) -> SharedFolder | None:
        """The archive of the list ``name`` if ``user`` may read it; None otherwise, the same
        for a list that does not exist as for one that is not the user's to read."""
        table = self._readers
        key = name.lower()
        if key not in table.public and key not in table.by_reader.get(user.lower(), ()):
            return None
        return self._shared(key)

    def _shared(self, key: str) -> SharedFolder | None:
        entry = self._readers.lists.get(key)
        if entry is None:
            return None
        address, title = entry
        try:
            folder = self.store.user(address).folder("INBOX")
        except (StoreError, OSError) as e:
            log.warn("archive of {list} not opened: {error}", list=address, error=str(e))
            return None
        return SharedFolder(address, folder, title)

    # -- refreshing ----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._loop = LoopingCall(self.reload)
        if self.clock is not None:
            self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        super().stopService()  # type: ignore[no-untyped-call]

    def reload(self) -> Deferred[None]:
        """Read the lists, their members and their groups again; fires once the new table
        answers.  Never fails: a failure is logged and the previous table kept."""
        return Deferred.fromCoroutine(self._reload())

    async def _reload(self) -> None:
        self._started += 1
        mine = self._started
        try:
            lists = await self._run(self._read)
            groups: dict[str, Sequence[str]] = {}
            for group in sorted({lst.group for lst, _ in lists if lst.group}):
                groups[group] = await self._expand(group)
        except Exception:
            log.failure("reading the lists' archive readers failed; the last reading is kept")
            return
        if mine < self._applied:
            return  # a later reading finished first
        self._applied = mine
        self._readers = readers(lists, groups)

    def _read(self) -> list[tuple[ListSettings, list[str]]]:
        """Every list with its subscribers' addresses (in a thread: the database blocks)."""
        return [(lst, [m.address for m in self.db.members(lst.address)]) for lst in self.db.lists()]

    async def _expand(self, group: str) -> tuple[str, ...]:
        """The members of a local or LDAP group (an alias of the directory); its last
        expansion when the directory cannot be asked."""
        try:
            recipient = await self.directory.lookup(group)
        except Exception as e:
            log.warn("group {group} of a list not expanded: {error}", group=group, error=str(e))
            return self._groups.get(group, ())
        members = (*recipient.mailboxes, *recipient.outbound)
        self._groups[group] = members
        return members
