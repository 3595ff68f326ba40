"""Retention in the server: daily expiry, and what users may erase (docs/vault.md).

:class:`RetentionService` runs :func:`ourmail.vault.expiry.expire` once a day in a thread,
and keeps :class:`VaultRetention`'s view of the holds current (every minute, reading only
the records appended since).

:class:`VaultRetention` is the server's :class:`~ourmail.interfaces.IRetention` (POP3's
``expunge`` policy, the webmail's list deletions ask it).  A user's deletion never removes a
vault record, so erasing a mailbox copy loses nothing the vault keeps.  But a mailbox may hold
messages older than the vault, which it never captured: so for a user a hold covers, nothing is
erased (the protocol hides the message instead).  Telling apart the messages the vault has
(by Message-ID or hash) would let those be erased; that lookup is not built.
"""

from __future__ import annotations

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
from ourmail.vault.expiry import Hook, Report, expire
from ourmail.vault.indexer import Indexer
from ourmail.vault.retention import BRIEF, DAY, State
from ourmail.vault.scan import entries
from ourmail.vault.segments import SegmentLog

log = Logger()

#: How often the holds are read again (seconds).
REFRESH = 60.0


@implementer(IRetention)
class VaultRetention:
    """IRetention over the vault's holds (see the module text)."""

    def __init__(self, local_domains: Sequence[str] | Callable[[], Sequence[str]]) -> None:
        self._domains = local_domains
        #: The holds as last read; None until the first reading (nothing is erased until then).
        self.state: State | None = None

    @property
    def local_domains(self) -> tuple[str, ...]:
        """The domains served now (``ourmail domain add`` adds some while the server runs)."""
        domains = self._domains() if callable(self._domains) else self._domains
        return tuple(d.lower() for d in domains)

    def may_erase(self, address: str, folder: str, message: IStoredMessage) -> bool:
        state = self.state
        return state is not None and not state.holds_address(address)

    def refresh(self, segments: SegmentLog) -> None:
        """Read the records appended since the last reading.  Blocks on the disk: call it in
        a thread; the new view replaces the old one whole."""
        old = self.state or State(self.local_domains)
        fresh = attrs.evolve(
            old,
            local_domains=self.local_domains,
            rules=dict(old.rules),
            holds=dict(old.holds),
            expired=set(),
        )
        for entry in entries(segments, fresh.last_seq, BRIEF):
            fresh.add(entry.fields)
        self.state = fresh


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
        self.retention = VaultRetention(local_domains)
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
