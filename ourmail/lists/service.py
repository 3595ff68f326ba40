"""The list manager as delivery sees it (:class:`~ourmail.interfaces.IListIntake`) and as a
service of the server: it keeps each arrival in the spool (``lists/spool.py``) before the
sender hears ``250``, then one worker handles the spooled arrivals in order, by the role of
the address they came for (docs/lists.md):

* ``post``, ``request``, ``join``, ``leave``, ``bounces``: the parts' handlers (a registry,
  :func:`default_handlers`);
* ``owner``: forwarded to the owners and moderators as it came (``lists/roles.py``);
* ``confirm``: ``LIST-confirm+TOKEN@``, the reply to a confirmation request, handed to the
  confirmer of the token's action (a registry, :func:`default_confirmers`).

A handler that raises is logged and retried with back-off; its entry stays in the spool,
and after :data:`GIVE_UP` seconds of failures it moves to ``<lists>/failed`` (logged as
critical).  The list addresses are answered from memory, refreshed when ``<lists>/changed``
changes (``ourmail list`` and the console touch it) or on :meth:`ListService.reload`.
Hourly, the periodic jobs run: held posts' and tokens' expiry, bounce scores' decay, digests.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.interfaces import IListIntake, ListArrival, MessageSource
from ourmail.lists import roles
from ourmail.lists.context import Handler, ListContext
from ourmail.lists.model import parse_address
from ourmail.lists.roles import Confirmer, loggable
from ourmail.lists.spool import Spool

log = Logger()

#: The change marks' modification times (the lists' ``changed``, the spool directory) and
#: when they were read.
Marks = tuple[float | None, float | None, float]
#: A periodic job of a part, run hourly.
Job = Callable[[ListContext], Awaitable[object]]

#: How often the table's and the spool's change marks are looked at (seconds).
WATCH_EVERY = 5.0
#: Modification times this close to the last look may hide a change made after it (seconds).
MARK_GRANULARITY = 1.0
#: How often the periodic jobs run.
PERIODIC_EVERY = 3600.0
#: Back-off of a failing arrival: the first retry after this, doubling up to :data:`MAX_DELAY`.
FIRST_DELAY = 60.0
MAX_DELAY = 3600.0
#: After this long (seconds since it arrived) a failing arrival is set aside in ``failed/``.
GIVE_UP = 24 * 3600.0
#: Leftovers younger than this may be an entry another process is writing now.
LEFTOVER_AGE = 300.0


def _lazy(module: str, name: str) -> Callable[..., Awaitable[Any]]:
    """``ourmail.lists.<module>.<name>``, imported at its first call (the parts are separate
    modules; one that is missing fails the call, and the arrival is retried)."""

    async def call(*args: Any) -> Any:
        found = getattr(importlib.import_module(f"ourmail.lists.{module}"), name)
        return await found(*args)

    return call


def default_handlers() -> dict[str, Handler]:
    """The parts' handlers of each role (``owner`` and ``confirm`` are the service's)."""
    return {
        "post": _lazy("posting", "handle"),
        "request": _lazy("requests", "handle_request"),
        "join": _lazy("requests", "handle_join"),
        "leave": _lazy("requests", "handle_leave"),
        "bounces": _lazy("bounces", "handle"),
    }


def default_confirmers() -> dict[str, Confirmer]:
    """The confirmer of each token action."""
    return {
        "subscribe": _lazy("requests", "confirm"),
        "unsubscribe": _lazy("requests", "confirm"),
        "digest": _lazy("requests", "confirm"),
        "each": _lazy("requests", "confirm"),
        "approve": _lazy("moderation", "confirm"),
        "reject": _lazy("moderation", "confirm"),
    }


def _optional(module: str, name: str) -> Job | None:
    try:
        found: Job = getattr(importlib.import_module(f"ourmail.lists.{module}"), name)
    except (ImportError, AttributeError):
        return None
    return found


def default_jobs() -> list[Job]:
    """The periodic jobs of the parts that are installed."""
    found = (
        _optional("moderation", "expire_held"),
        _optional("bounces", "decay"),
        _optional("digest", "send_due"),
    )
    return [job for job in found if job is not None]


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@implementer(IListIntake)
class ListService(Service):
    """The mailing lists' intake and worker (see the module docstring).  ``process``: off in
    the MX workers, which only keep arrivals (the main process handles them);
    ``watch_every``: seconds between looks at the change marks."""

    name = "lists"

    def __init__(
        self,
        ctx: ListContext,
        scheduler: IReactorTime,
        handlers: Mapping[str, Handler] | None = None,
        confirmers: Mapping[str, Confirmer] | None = None,
        jobs: Callable[[], Sequence[Job]] = default_jobs,
        process: bool = True,
        watch_every: float = WATCH_EVERY,
    ) -> None:
        self.ctx = ctx
        self.scheduler = scheduler
        self.spool = Spool(ctx.root / "spool")
        self.handlers = default_handlers() if handlers is None else dict(handlers)
        self.confirmers = default_confirmers() if confirmers is None else dict(confirmers)
        self.jobs = jobs
        self.process = process
        self.watch_every = watch_every
        self._lists: frozenset[str] = frozenset()
        #: The change marks' times at the last look, and when it was.
        self._marks: Marks = (None, None, 0.0)
        #: Failing entries: message path -> (failures, next try, first failure).
        self._retry: dict[Path, tuple[int, float, float]] = {}
        self._worker: Deferred[None] | None = None
        self._start: Deferred[None] | None = None
        self._again = False
        self._wake: IDelayedCall | None = None
        self._idle: list[Deferred[None]] = []
        self._loops: list[LoopingCall] = []
        #: Called after each reading of the lists (the archives' readers follow them).
        self.followers: list[Callable[[], object]] = []

    # -- the service -------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        d = self.ctx.run(self._starting).addCallback(self._started)
        d.addErrback(lambda f: log.failure("the lists could not start", f))
        self._start = d
        d.addBoth(self._up)

    def _up(self, result: None) -> None:
        self._start = None

    def _starting(self) -> tuple[frozenset[str], Marks]:
        if self.process:
            removed = self.spool.recover(LEFTOVER_AGE)
            if removed:
                log.warn("lists: removed {n} leftover spool file(s) of a crash", n=removed)
        return self._read_table(), self._read_marks()

    def _started(self, found: tuple[frozenset[str], Marks]) -> None:
        self._lists, self._marks = found
        if not self.running:
            return
        watch = LoopingCall(self._watch)
        watch.clock = self.scheduler
        self._loops.append(watch)
        watch.start(self.watch_every, now=False).addErrback(
            lambda f: log.failure("lists: the watch stopped", f)
        )
        if self.process:
            periodic = LoopingCall(self.periodic)
            periodic.clock = self.scheduler
            self._loops.append(periodic)
            periodic.start(PERIODIC_EVERY, now=False).addErrback(
                lambda f: log.failure("lists: the periodic jobs stopped", f)
            )
        self.kick()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None
        # The run under way ends (no other starts now), then the file's connections close.
        return self.drained().addCallback(lambda _: self.ctx.db.close())

    # -- the table of lists ------------------------------------------------------------------

    def _read_table(self) -> frozenset[str]:
        return frozenset(lst.address for lst in self.ctx.db.lists())

    def _read_marks(self) -> Marks:
        now = time.time()
        return _mtime(self.ctx.root / "changed"), _mtime(self.spool.root), now

    def load(self) -> None:
        """Read the table of lists now, blocking (at start-up, before mail is taken: the
        list addresses are answered from the first connection on)."""
        self._lists = self._read_table()

    def reload(self) -> Deferred[None]:
        """Read the table of lists again (after a change by the console); fires when done."""
        return ensureDeferred(self._reload())

    async def _reload(self) -> None:
        self._lists = await self.ctx.run(self._read_table)
        for follow in self.followers:
            follow()

    def _watch(self) -> Deferred[None]:
        return ensureDeferred(self._look())

    async def _look(self) -> None:
        """Read the table again when ``changed`` changed; handle the spool when it did."""
        marks = await self.ctx.run(self._read_marks)
        (changed, spooled, _), (was_changed, was_spooled, before) = marks, self._marks
        self._marks = marks

        def moved(mark: float | None, was: float | None) -> bool:
            # A change just after the last look may carry the same time (the file system's
            # clock is coarse): a mark that recent counts as a change once more.
            return mark != was or (mark is not None and mark >= before - MARK_GRANULARITY)

        if moved(spooled, was_spooled):
            self.kick()  # an MX worker spooled an arrival
        if moved(changed, was_changed):
            try:
                await self._reload()
            except Exception:
                self._marks = (None, spooled, before)  # read again at the next look
                log.failure("lists: the table of lists could not be read")

    # -- IListIntake -------------------------------------------------------------------------

    def handles(self, address: str) -> bool:
        """Whether ``address`` is one of a list's addresses (from memory)."""
        return self.ctx.settings.enabled and parse_address(address, self._lists) is not None

    def is_list(self, address: str) -> bool:
        """Whether ``address`` is one of a list's addresses, whatever ``[lists] enabled``."""
        return parse_address(address, self._lists) is not None

    def refusal(self, address: str, size: int) -> str | None:
        """Over ``[lists] max_post`` (or the server's largest message): refused (RFC 3463
        X.3.4); a list's own ``max_size`` does not refuse, posting holds such a post for
        moderation."""
        if size > self.ctx.max_message_size:
            return "552 5.3.4 Message too big for the system"
        most = self.ctx.settings.max_post
        if size > most:
            return f"552 5.3.4 Message too big for the list (at most {most} octets)"
        return None

    def accept(self, arrival: ListArrival, source: MessageSource) -> Deferred[None]:
        """Spool the arrival; fires once it is durable, then it is handled in turn."""
        return ensureDeferred(self._accept(arrival, source))

    async def _accept(self, arrival: ListArrival, source: MessageSource) -> None:
        await self.ctx.run(self.spool.keep, arrival, source)
        log.info("{id}: kept for {address}", id=arrival.id, address=loggable(arrival.address))
        self.kick()

    # -- the worker --------------------------------------------------------------------------

    def kick(self) -> None:
        """Handle what is in the spool (now, or after the run under way)."""
        if not self.process or not self.running:
            return
        if self._worker is not None:
            self._again = True
            return
        self._worker = ensureDeferred(self._drain())
        self._worker.addErrback(lambda f: log.failure("lists: the spool could not be read", f))
        self._worker.addBoth(self._drained)

    def _drained(self, _: object) -> None:
        self._worker = None
        if self._again and self.running:
            self.kick()
            return
        self._plan_retry()
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    def drained(self) -> Deferred[None]:
        """Fires when the worker has nothing left to do now (for tests and the console)."""
        if self._start is not None:  # not started yet: what is spooled waits for the start
            after: Deferred[None] = Deferred()

            def started(result: None) -> None:
                self.drained().chainDeferred(after)

            self._start.addBoth(started)
            return after
        if self._worker is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    async def _drain(self) -> None:
        self._again = False
        entries = await self.ctx.run(self.spool.pending)
        for arrival, path in entries:
            if not self.running:
                return
            waiting = self._retry.get(path)
            if waiting is not None and waiting[1] > self.ctx.clock():
                continue
            await self._one(arrival, path)

    def _plan_retry(self) -> None:
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None
        if not self._retry or not self.running:
            return
        delay = max(0.0, min(t for _, t, _ in self._retry.values()) - self.ctx.clock())
        self._wake = self.scheduler.callLater(delay, self.kick)

    async def _one(self, arrival: ListArrival, path: Path) -> None:
        try:
            await self._dispatch(arrival, path)
        except Exception:
            await self._failed(arrival, path)
            return
        self._retry.pop(path, None)
        await self.ctx.run(self.spool.done, path)

    async def _failed(self, arrival: ListArrival, path: Path) -> None:
        now = self.ctx.clock()
        failures, _, first = self._retry.get(path, (0, now, now))
        failures += 1
        since = arrival.arrival or first
        if now - since >= GIVE_UP:
            self._retry.pop(path, None)
            moved = await self.ctx.run(self.spool.move, path, self.ctx.root / "failed")
            log.critical(
                "{id}: for {address}, failing for a day ({n} times): set aside as {moved}",
                id=arrival.id,
                address=loggable(arrival.address),
                n=failures,
                moved=str(moved),
            )
            return
        delay = min(FIRST_DELAY * 2 ** (failures - 1), MAX_DELAY)
        self._retry[path] = (failures, now + delay, first)
        log.failure(
            "{id}: for {address} failed (try {n}); again in {delay:.0f} s",
            id=arrival.id,
            address=loggable(arrival.address),
            n=failures,
            delay=delay,
        )

    async def _dispatch(self, arrival: ListArrival, path: Path) -> None:
        where = parse_address(arrival.address, self._lists)
        if where is None:  # made in another process since the table was read
            await self.reload()
            where = parse_address(arrival.address, self._lists)
        lst = None if where is None else await self.ctx.run(self.ctx.db.get, where.list)
        if where is None or lst is None:
            log.info(
                "{id}: dropped: {address} is no list now",
                id=arrival.id,
                address=loggable(arrival.address),
            )
            return
        if where.role == "owner":
            await roles.forward_to_owners(self.ctx, lst, arrival, path)
        elif where.role == "confirm":
            await roles.confirm(
                self.ctx, lst, arrival, where.detail, self.confirmers, self.is_list, path
            )
        else:
            handler = self.handlers.get(where.role)
            if handler is None:
                raise LookupError(f"no handler of the role {where.role}")
            await handler(self.ctx, lst, arrival, path)

    # -- periodic jobs -----------------------------------------------------------------------

    def periodic(self) -> Deferred[None]:
        """Run the hourly jobs; a failing one is logged, the others run still."""
        return ensureDeferred(self._periodic())

    async def _periodic(self) -> None:
        try:  # an MX worker killed while it wrote
            await self.ctx.run(self.spool.recover, LEFTOVER_AGE)
        except OSError:
            log.failure("lists: the spool's leftovers could not be removed")
        for job in self.jobs():
            try:
                await job(self.ctx)
            except Exception:
                log.failure(
                    "lists: the periodic job {job} failed", job=getattr(job, "__name__", job)
                )
        try:
            expired = await self.ctx.run(self.ctx.db.expire_tokens, self.ctx.clock())
        except Exception:
            log.failure("lists: confirmations could not expire")
        else:
            if expired:
                log.info("lists: {n} confirmation(s) expired", n=expired)
