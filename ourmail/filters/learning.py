"""Learning from people: a message moved (or copied) into Junk is taught to the spam scanner
as spam, one moved out of Junk to anywhere but Trash as ham (docs/filters.md).

Implementation notes (keep these true when changing this module):

* The store tells :class:`JunkLearning` before it copies or moves messages between two
  folders of a user (:class:`~ourmail.interfaces.ITransferObserver`), with the folders' RFC
  6154 special uses, whoever asked (IMAP COPY and MOVE; later the webmail).  POP3 only ever
  moves to Trash, which teaches nothing.
* The messages are read and queued durably (:mod:`ourmail.filters.learnqueue`) in a thread
  before the store transfers them, :data:`CHUNK` at a time (one transaction each, so that
  "select all, Not junk" on thousands of messages holds one chunk in memory), and only
  while the queue has room (what does not fit is logged, never read, and the move goes
  on): a crash during the move loses no request, and the key (user, content hash,
  direction) means a message is learned once per direction however often it is moved.
  The IMAP command waits for that write only, never for the scanner.
* The scanner is told later, one request after another, by :meth:`JunkLearning.run`
  (:class:`~ourmail.interfaces.ISpamLearner`).  When it cannot be told, the request waits
  ``retry_min`` seconds, doubled each time up to ``retry_max``, and the pass stops (the
  scanner is probably down); the next pass waits for that request's retry time, however
  many others are due or queued meanwhile (one attempt per back-off, not one per request);
  requests survive restarts.  One still not learned after ``give_up`` seconds is dropped
  with a log line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.config import LearningSettings
from ourmail.filters.learnqueue import DROPPED, LEARNED, Added, LearnQueue, Request
from ourmail.interfaces import ISpamLearner, ITransferObserver

log = Logger()

JUNK, TRASH = "\\Junk", "\\Trash"
#: Requests read from the queue at a time.
BATCH = 20
#: Messages of one transfer read and queued in one transaction at most (up to
#: ``max_size`` bytes each).
CHUNK = 100
DEFAULTS = LearningSettings()
#: Seconds between two prunings of remembered keys.
PRUNE_EVERY = 86400.0
#: The back-off doubles at most this many times (``2**attempts`` of a request retried for
#: long would overflow a float: ``retry_max`` is reached long before anyway).
MAX_DOUBLINGS = 30


def direction(source_use: str | None, target_use: str | None) -> bool | None:
    """True (spam) into Junk, False (ham) out of Junk but not into Trash, else None."""
    if target_use == JUNK and source_use != JUNK:
        return True
    if source_use == JUNK and target_use not in (JUNK, TRASH):
        return False
    return None


def read_messages(files: Sequence[os.PathLike[str]], max_size: int) -> list[bytes]:
    """The messages in ``files`` (blocking), without those larger than ``max_size`` or gone
    meanwhile (both logged)."""
    messages = []
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read(max_size + 1)
        except FileNotFoundError:
            log.info("not learned: {path} is gone", path=str(path))
            continue
        if len(data) > max_size:
            log.info("not learned: {path} is larger than {max} bytes", path=str(path), max=max_size)
            continue
        messages.append(data)
    return messages


@implementer(ITransferObserver)
class JunkLearning(Service):
    """Queues what people move into and out of Junk, and teaches the scanner."""

    def __init__(
        self,
        queue: LearnQueue,
        learner: ISpamLearner,
        clock: IReactorTime,
        settings: LearningSettings = DEFAULTS,
    ) -> None:
        self.queue = queue
        self.learner = learner
        self.clock = clock
        self.settings = settings
        self._timer: IDelayedCall | None = None
        self._running: Deferred[None] | None = None
        self._again = False
        self._last_prune = 0.0
        #: The scanner's answer the pass under way waits for.
        self._asking: Deferred[None] | None = None
        #: When the request the last pass failed on is retried (None: the pass did not fail).
        self._failed_until: float | None = None
        #: No pass starts before this time (the scanner could not be told: back off).
        self._paused_until = 0.0

    @classmethod
    def at(
        cls,
        state_dir: Path,
        learner: ISpamLearner,
        clock: IReactorTime,
        settings: LearningSettings = DEFAULTS,
    ) -> JunkLearning:
        """The learning of a server whose filter state is in ``state_dir``."""
        queue = LearnQueue(
            state_dir / "learning" / "learning.sqlite", max_bytes=settings.max_queue_bytes
        )
        return cls(queue, learner, clock, settings)

    # -- ITransferObserver ----------------------------------------------------------------

    def transferring(
        self,
        user: str,
        source_use: str | None,
        target_use: str | None,
        files: Sequence[os.PathLike[str]],
    ) -> Deferred[None]:
        spam = direction(source_use, target_use)
        if spam is None:
            return succeed(None)
        d = threads.deferToThread(self._record, user, spam, list(files))

        what = "spam" if spam else "ham"

        def recorded(added: Added) -> None:
            if added.full:
                log.warn(
                    "{user}: {n} message(s) not learned as {what}: the learning queue is full"
                    " (the spam scanner is behind or down)",
                    user=user,
                    n=added.full,
                    what=what,
                )
            if added.new:
                log.info(
                    "{user}: {n} message(s) queued to learn as {what}",
                    user=user,
                    n=added.new,
                    what=what,
                )
                self.wake()

        def failed(failure: Failure) -> None:
            log.failure("could not queue messages of {user} to learn", failure, user=user)

        return d.addCallbacks(recorded, failed)

    def _record(self, user: str, spam: bool, files: list[os.PathLike[str]]) -> Added:
        """Read and queue ``files`` (blocking), :data:`CHUNK` at a time while there is room."""
        new = full = 0
        for start in range(0, len(files), CHUNK):
            if not self.queue.has_room():
                full += len(files) - start
                break
            messages = read_messages(files[start : start + CHUNK], self.settings.max_size)
            added = self.queue.add(user, spam, messages, time.time())
            new += added.new
            full += added.full
        return Added(new, full)

    # -- the runner -----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._paused_until = 0.0
        self.wake()

    def stopService(self) -> Deferred[None] | None:
        """Stop at once: a request the scanner is still answering is cancelled (it stays
        queued and counts as an attempt)."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._asking is not None:
            self._asking.cancel()
        return self._running

    def wake(self) -> None:
        """Teach the scanner what is due now (after the pass under way, if any; after the
        back-off when the last pass could not tell the scanner)."""
        if not self.running:
            return
        if self._running is not None:
            self._again = True
            return
        if time.time() < self._paused_until:
            return  # the timer set when the pass failed wakes it
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._running = Deferred.fromCoroutine(self.run())
        self._running.addBoth(self._ran)

    def _ran(self, result: object) -> None:
        self._running = None
        failed_until, self._failed_until = self._failed_until, None
        if isinstance(result, Failure):
            self._unreadable(result)
            return
        if failed_until is not None and self.running:
            # The scanner could not be told: the other due requests wait for the failed
            # one's retry, so that a scanner down costs one attempt per back-off.
            self._again = False
            self._paused_until = failed_until
            self._schedule(failed_until)
            return
        if self._again:
            self._again = False
            self.wake()
            return
        if self.running:
            d = threads.deferToThread(self.queue.next_due)
            d.addCallbacks(self._schedule, self._unreadable)

    def _unreadable(self, failure: Failure) -> None:
        log.failure("learning: the queue cannot be read; trying again later", failure)
        self._schedule(time.time() + self.settings.retry_max)

    def _schedule(self, at: float | None) -> None:
        if at is None or not self.running or self._running is not None:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        delay = max(0.0, at - time.time())
        self._timer = self.clock.callLater(delay, self._resume)

    def _resume(self) -> None:
        self._paused_until = 0.0
        self.wake()

    async def run(self) -> None:
        """One pass: teach every due request, stopping at the first the scanner refuses."""
        while True:
            batch: list[Request] = await threads.deferToThread(self.queue.due, time.time(), BATCH)
            if not batch:
                break
            for request in batch:
                if not await self._teach(request) or not self.running:
                    return
        now = time.time()
        if now - self._last_prune > PRUNE_EVERY:
            self._last_prune = now
            keep = self.settings.remember_days * 86400.0
            await threads.deferToThread(self.queue.prune, now - keep)

    async def _teach(self, request: Request) -> bool:
        """Tell the scanner; False when it could not be told (the request waits)."""
        what = "spam" if request.spam else "ham"
        d = defer.maybeDeferred(self.learner.learn, request.user, request.message, request.spam)
        d.addTimeout(self.settings.timeout, self.clock)
        self._asking = d
        try:
            await d
        except Exception as e:
            self._asking = None
            now = time.time()
            if now - request.queued > self.settings.give_up:
                log.warn(
                    "gave up learning a message of {user} as {what} after {n} attempts: {e}",
                    user=request.user,
                    what=what,
                    n=request.attempts + 1,
                    e=e,
                )
                await threads.deferToThread(self.queue.finish, request, DROPPED, now)
                return True
            doublings = min(request.attempts, MAX_DOUBLINGS)
            delay = min(self.settings.retry_max, self.settings.retry_min * 2**doublings)
            log.warn(
                "could not teach the spam scanner ({why}); retry in {delay:.0f} s",
                why=f"{type(e).__name__}: {e}",
                delay=delay,
            )
            await threads.deferToThread(self.queue.retry, request, now + delay)
            self._failed_until = now + delay
            return False
        self._asking = None
        log.info("learned a message of {user} as {what}", user=request.user, what=what)
        await threads.deferToThread(self.queue.finish, request, LEARNED, time.time())
        return True
