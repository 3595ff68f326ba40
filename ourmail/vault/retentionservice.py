"""Retention in the server: daily expiry, and what users may erase (docs/vault.md).

:class:`RetentionService` runs :func:`ourmail.vault.expiry.expire` once a day in a thread,
and keeps :class:`VaultRetention`'s view of the holds current (every minute, reading only
the records appended since).

A hold is honoured at once all the same, not up to a minute late: before it answers,
:meth:`VaultRetention.may_erase` (called on the reactor) reads the vault's ``head`` file, one
small read, and if the chain has grown since its last reading it reads the records appended
since there and then, from the place in the segment where that reading ended (their metadata
only; captures and blobs by their seq alone).  At most :data:`CATCH_UP` records are read so on
the reactor; further behind than that (the minute's refresh failed, a burst of mail), or when
expiry has rewritten that segment since, it answers "keep" and refreshes in a thread.
Reading in a thread every time instead would answer "keep" whenever mail arrived since the
last reading, which on a busy server is nearly always: nothing would ever be erased.

:class:`VaultRetention` is the server's :class:`~ourmail.interfaces.IRetention` (POP3's
``expunge`` policy, the webmail's list deletions ask it).  A user's deletion never removes a
vault record, so erasing a mailbox copy loses nothing the vault keeps.  But a mailbox may hold
messages older than the vault, which it never captured: so for a user a hold covers, nothing is
erased (the protocol hides the message instead).  Telling apart the messages the vault has
(by Message-ID or hash) would let those be erased; that lookup is not built.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

import attrs
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.interfaces import IRetention, IStoredMessage
from ourmail.vault import records
from ourmail.vault.expiry import Hook, Report, expire
from ourmail.vault.indexer import Indexer
from ourmail.vault.retention import BRIEF, DAY, State
from ourmail.vault.scan import Entry, entries, frames
from ourmail.vault.segments import SegmentLog

log = Logger()

#: How often the holds are read again (seconds).
REFRESH = 60.0
#: Most records :meth:`VaultRetention.may_erase` reads on the reactor (a few microseconds
#: each: their metadata's first 4 KiB, captures and blobs not parsed).
CATCH_UP = 2000


@implementer(IRetention)
class VaultRetention:
    """IRetention over the vault's holds (see the module text)."""

    def __init__(
        self,
        local_domains: Sequence[str] | Callable[[], Sequence[str]],
        segments: SegmentLog | None = None,
    ) -> None:
        self._domains = local_domains
        #: The vault read before answering (None: only :meth:`refresh` updates the view).
        self.segments = segments
        #: The holds as last read; None until the first reading (nothing is erased until then).
        self.state: State | None = None
        #: Where the last reading ended (None: unknown, read in a thread).
        self._cursor: _Cursor | None = None
        #: Guards replacing :attr:`state` (the refresh thread and the reactor both do).
        self._replacing = threading.Lock()
        self._refreshing = False

    @property
    def local_domains(self) -> tuple[str, ...]:
        """The domains served now (``ourmail domain add`` adds some while the server runs)."""
        domains = self._domains() if callable(self._domains) else self._domains
        return tuple(d.lower() for d in domains)

    def may_erase(self, address: str, folder: str, message: IStoredMessage) -> bool:
        """False while a hold covers ``address``, or while the holds are not known (module
        text: the records appended since the last reading are read first)."""
        state = self.state
        if state is not None and self.segments is not None:
            state = self._current(state, self.segments)
        return state is not None and not state.holds_address(address)

    def refresh(self, segments: SegmentLog) -> None:
        """Read the records appended since the last reading.  Blocks on the disk: call it in
        a thread; the new view replaces the old one whole."""
        old = self.state
        fresh = self._copy(old)
        last: Entry | None = None
        # from the last record already read on, for where it is (adding it again is a no-op)
        for entry in entries(segments, max(fresh.last_seq - 1, 0), BRIEF):
            fresh.add(entry.fields)
            last = entry
        cursor = None if last is None else _cursor_after(segments, last)
        self._replace(fresh, cursor)

    def _current(self, state: State, segments: SegmentLog) -> State | None:
        """``state``, or a newer one when the chain grew since it was read (on the reactor:
        one read of ``head``, whose seq is exact where a stat's mtime may not change within a
        clock tick, then at most :data:`CATCH_UP` records from where the last reading ended);
        None when further behind, or when a rewrite moved that place (a refresh in a thread is
        started)."""
        if segments.head()[0] == state.last_seq:
            return state
        fresh = self._catch_up(state, self._cursor, segments)
        if fresh is None and not self._refreshing:
            self._refreshing = True
            d = deferToThread(self.refresh, segments)
            d.addErrback(lambda f: log.failure("reading the vault's holds", f))
            d.addBoth(lambda _: setattr(self, "_refreshing", False))
        return fresh

    def _catch_up(self, state: State, cursor: _Cursor | None, segments: SegmentLog) -> State | None:
        """``state`` with the records after ``cursor`` read, at most :data:`CATCH_UP` (no
        cursor and nothing read yet: from the first segment on)."""
        if cursor is None:
            if state.last_seq:
                return None
            cursor = _Cursor(1, 0, 0, 0)  # a new vault's first segment, from its header
        if cursor.seq != state.last_seq:
            return None
        fresh = self._copy(state)
        number, offset, count = cursor.segment, cursor.offset, 0
        try:
            while True:
                try:
                    path = segments.path_of(number)
                except FileNotFoundError:
                    break
                with open(path, "rb") as f:
                    fd = f.fileno()
                    inode = os.fstat(fd).st_ino
                    if number != cursor.segment or not cursor.offset:
                        header = os.pread(fd, records.MAX_FRAME_LINE, 0)
                        offset = records.parse_segment_header(header).length
                    elif inode != cursor.inode:
                        return None  # expiry rewrote it: the offsets moved
                    for entry, after in frames(fd, number, offset, BRIEF):
                        if count == CATCH_UP or entry.seq != fresh.last_seq + 1:
                            return None
                        fresh.add(entry.fields)
                        count, offset = count + 1, after
                cursor = _Cursor(number, offset, inode, fresh.last_seq)
                number += 1
        except (OSError, records.FormatError):
            return None  # the refresh in a thread reads it, or logs why not
        self._replace(fresh, cursor)
        return fresh

    def _copy(self, old: State | None) -> State:
        """A view to read more records into, leaving ``old`` as it is."""
        base = old or State(self.local_domains)
        return attrs.evolve(
            base,
            local_domains=self.local_domains,
            rules=dict(base.rules),
            holds=dict(base.holds),
            expired=set(),
        )

    def _replace(self, fresh: State, cursor: _Cursor | None) -> None:
        """Make ``fresh`` the view, unless a newer one is there already (the refresh thread
        and the reactor both read)."""
        with self._replacing:
            if self.state is None or self.state.last_seq <= fresh.last_seq:
                self.state, self._cursor = fresh, cursor


@attrs.frozen
class _Cursor:
    """Where a reading of the vault ended: the next frame's place, in which file."""

    segment: int
    #: 0: the segment's first record (after its header).
    offset: int
    inode: int
    #: The last seq read.
    seq: int


def _cursor_after(segments: SegmentLog, entry: Entry) -> _Cursor | None:
    """The place after ``entry``'s frame (None when expiry rewrote its segment meanwhile)."""
    number = entry.position.segment
    try:
        with open(segments.path_of(number), "rb") as f:
            fd = f.fileno()
            for found, after in frames(fd, number, entry.position.offset):
                if found.seq != entry.seq:
                    return None
                return _Cursor(number, after, os.fstat(fd).st_ino, entry.seq)
    except (OSError, records.FormatError):
        return None
    return None


class RetentionService(MultiService):
    """Daily expiry and the holds' refresh, for the server's main process."""

    def __init__(
        self,
        segments: SegmentLog,
        local_domains: Sequence[str] | Callable[[], Sequence[str]],
        clock: IReactorTime | None = None,
        hooks: Sequence[Hook] = (),
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.segments = segments
        self.retention = VaultRetention(local_domains, segments)
        if not self.segments.segments():  # no vault yet, so no hold: nothing to wait for
            self.retention.state = State(self.retention.local_domains)
        self.hooks = tuple(hooks)
        #: The server's search index keeper, for query holds on body words and attachment
        #: names (None: such holds keep every message).
        self.indexer: Indexer | None = None
        self.clock = clock
        for interval, call in ((REFRESH, self.refresh), (DAY, self.expire)):
            timer = TimerService(interval, call)  # type: ignore[no-untyped-call]
            if clock is not None:
                timer.clock = clock
            timer.setServiceParent(self)  # type: ignore[no-untyped-call]

    def refresh(self) -> Deferred[None]:
        d = deferToThread(self.retention.refresh, self.segments)
        d.addErrback(self._failed, "reading the vault's holds")
        return d

    def expire(self) -> Deferred[Report | None]:
        """One expiry run in a thread (none while the vault has no segment)."""
        if not self.segments.segments():
            return succeed(None)
        d: Deferred[Report | None] = deferToThread(
            self._expire, time.time() if self.clock is None else self.clock.seconds()
        )
        d.addErrback(self._failed, "vault expiry")
        return d

    def _expire(self, now: float) -> Report:
        """Thread: the index caught up (for query holds on words), then one expiry run."""
        index = None
        if self.indexer is not None:
            self.indexer.catch_up()
            index = self.indexer.index
        return expire(self.segments, self.retention.local_domains, now, None, self.hooks, index)

    def _failed(self, failure: Failure, what: str) -> None:
        log.failure("{what} failed; tried again at the next run", failure, what=what)
