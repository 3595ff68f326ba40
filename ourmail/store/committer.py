"""Group commit of deliveries across all folders of a process.

Every message stored (SMTP delivery, APPEND, COPY) becomes a job.  Jobs that arrive while a
batch is being committed wait for the next batch.  A batch is committed in a worker thread:

1. each message is written (or hard-linked) into its folder's ``tmp/``;
2. per folder, under that folder's lock, the files are renamed into ``new/`` or ``cur/`` and
   their journal lines appended (:meth:`Target.place`);
   (before this step, each participant that joined the batch, the vault, writes its items,
   and flushes them if it asks to, so no mailbox file is placed that a participant lacks;
   its failure fails the batch);
3. one ``syncfs(2)`` per filesystem makes the whole batch durable, files, directory entries and
   journals alike (without syncfs: an fsync per file before the rename, then per directory);
4. back on the reactor, each folder reads its journal tail and every job's Deferred fires with
   the message's UID.

So a message is acknowledged only once its own data and directory entry are on disk, while the
cost of the flush is shared by everyone in the batch, whichever users they deliver to.

The store owns one :class:`Committer` (``MaildirStore.committer``), made with the reactor it
runs on; a folder is a :class:`Target`, the small protocol this module needs of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import attrs
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ourmail.fsutil import HAVE_SYNCFS, syncfs
from ourmail.interfaces import (
    ICommitGroup,
    ICommitParticipant,
    MessageSource,
    ShardMoving,
    StoreError,
)
from ourmail.mime.summary import Summary
from ourmail.store import faults, maildir

#: Batches committed at once.  One: jobs that arrive during a commit form the next, bigger batch,
#: so the flush (syncfs) is shared by more messages; measured faster than two (performance.md).
CONCURRENT_BATCHES = 1

#: Where a folder's journal stood when a batch was formed (:meth:`Target.snapshot`): journal
#: inode and offset, uidvalidity, uidnext, highestmodseq and the last directory stamp.  Opaque
#: to the committer, handed back to :meth:`Target.place`.
Snapshot = tuple[int | None, int, int, int, int, tuple[int, int] | None]
#: What :meth:`Target.place` gets per message: the file prepared in ``tmp/`` and its Maildir
#: info (flags), None for a message without flags (it goes to ``new/``).
Placement = tuple[maildir.Prepared, str | None]


class Reactor(IReactorTime, IReactorCore, IReactorFromThreads):
    """What the committer needs of a reactor: timers, shutdown triggers, calls from threads."""


class Target(Protocol):
    """What the committer needs of a folder.  :meth:`snapshot`, :meth:`committed` and
    :meth:`uid_of` are called on the reactor thread; :meth:`place` and :meth:`flush` in the
    committer's worker thread, and touch only files, never the folder's in-memory state."""

    @property
    def path(self) -> Path:
        """The folder's Maildir (with ``tmp/``, ``new/``, ``cur/``)."""

    def snapshot(self) -> Snapshot:
        """Where the folder's journal stands now."""

    def place(self, snapshot: Snapshot, work: Sequence[Placement]) -> bool:
        """Under the folder lock: rename the prepared files into place and append their
        journal lines (no flush).  False when the journal was replaced since ``snapshot``
        (the batch's jobs are tried again); ShardMoving when the folder is being moved."""

    def flush(self) -> None:
        """Without syncfs: make the renames and journal lines of :meth:`place` durable."""

    def committed(self) -> None:
        """A batch placed messages here: read the journal tail, tell the listeners."""

    def uid_of(self, base: str) -> int | None:
        """The UID of the message whose file has this Maildir base name, if present."""


#: The arguments of :meth:`Committer.submit`, for :meth:`Committer.submit_all`.
Submission = tuple[Target, MessageSource, str | None, float | None, Summary | None, str | None]


@attrs.define
class Job:
    folder: Target
    source: MessageSource
    info: str | None
    date: float | None
    summary: Summary | None
    base: str | None = None
    done: Deferred[int] = attrs.Factory(Deferred)
    prepared: maildir.Prepared | None = None


@attrs.define
class Joined:
    """An item another writer (:class:`ICommitParticipant`) writes in the next batch."""

    participant: ICommitParticipant
    item: object
    done: Deferred[object] = attrs.Factory(Deferred)


@implementer(ICommitGroup)
class Committer:
    """Group commit of the messages stored through one store (see the module text)."""

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor
        self._waiting: list[Job] = []
        self._joined: list[Joined] = []
        self._running = 0
        self._pool: ThreadPool | None = None

    def _threads(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(1, CONCURRENT_BATCHES, name="ourmail-commit")
            self._pool.start()
            self._reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

    def submit(
        self,
        folder: Target,
        source: MessageSource,
        info: str | None,
        date: float | None,
        summary: Summary | None,
        base: str | None = None,
    ) -> Deferred[int]:
        """Store a message in ``folder`` (named ``base`` if given); fires with its UID once it
        is durable."""
        job = Job(folder, source, info, date, summary, base)
        self._waiting.append(job)
        self._reactor.callLater(0, self._kick)
        return job.done

    def join(self, participant: ICommitParticipant, item: object) -> Deferred[object]:
        """Write ``item`` with ``participant`` in the next batch, before any mailbox file of
        it is placed; fires with the participant's result once the batch is durable."""
        joined = Joined(participant, item)
        self._joined.append(joined)
        self._reactor.callLater(0, self._kick)
        return joined.done

    def submit_all(self, jobs: Iterable[Submission]) -> list[Deferred[int]]:
        """Queue several messages in order: they commit in one batch, so their UIDs ascend."""
        return [self.submit(*job) for job in jobs]

    def _kick(self) -> None:
        if self._running >= CONCURRENT_BATCHES or not (self._waiting or self._joined):
            return
        batch, self._waiting = self._waiting, []
        joined, self._joined = self._joined, []
        self._running += 1
        snapshots = {id(j.folder): j.folder.snapshot() for j in batch}
        d = threads.deferToThreadPool(
            self._reactor, self._threads(), _commit, batch, snapshots, joined
        )
        d.addCallbacks(
            self._committed,
            self._failed,
            callbackArgs=(batch, joined),
            errbackArgs=(batch, joined),
        )

    def _committed(
        self, outcome: tuple[Outcome, list[object]], batch: list[Job], joined: list[Joined]
    ) -> None:
        self._running -= 1
        (retry, refused, gone), results = outcome
        for each, result in zip(joined, results, strict=True):
            each.done.callback(result)
        for job in refused:
            job.done.errback(ShardMoving("this mailbox is being moved; try again soon"))
        for job, error in gone:
            job.done.errback(error)
        not_committed = {id(j) for j in (*retry, *refused, *(job for job, _ in gone))}
        folders = {id(j.folder): j.folder for j in batch}
        for folder in folders.values():
            folder.committed()
        for job in batch:
            if id(job) in not_committed:
                continue
            assert job.prepared is not None
            uid = job.folder.uid_of(job.prepared.base)
            if uid is None:
                job.done.errback(StoreError("message vanished right after delivery"))
            else:
                job.done.callback(uid)
        # A folder whose journal was replaced meanwhile (compaction) catches up; its jobs retry.
        self._waiting[:0] = retry
        self._kick()

    def _failed(self, failure: Failure, batch: list[Job], joined: list[Joined]) -> None:
        self._running -= 1
        for job in batch:
            job.done.errback(failure)
        for each in joined:
            each.done.errback(failure)
        self._kick()


#: What a batch left undone: jobs to try again (their journal was replaced meanwhile), jobs
#: refused (their shard is being moved), and jobs whose message could not be written (a copy
#: whose source was expunged meanwhile), each with its error.
Outcome = tuple[list["Job"], list["Job"], list[tuple["Job", OSError]]]


def _commit(
    batch: list[Job], snapshots: dict[int, Snapshot], joined: Sequence[Joined] = ()
) -> tuple[Outcome, list[object]]:
    """Worker thread: write, place and flush a batch.  A job that cannot be written fails
    alone; the rest of the batch (other users' deliveries too) goes on.  The participants
    write their items before anything is placed; if one fails, the whole batch fails and its
    prepared files are removed (no mailbox gets a message a participant lacks)."""
    gone: list[tuple[Job, OSError]] = []
    for job in batch:
        if job.prepared is None:
            try:
                job.prepared = _prepare(job)
            except FileNotFoundError as e:
                gone.append((job, e))
    batch = [job for job in batch if job.prepared is not None]
    faults.point("delivery-prepared")
    devices: dict[int, Path] = {}
    try:
        results = _participate(joined)
    except BaseException:
        for job in batch:
            assert job.prepared is not None
            (job.folder.path / "tmp" / job.prepared.tmp_name).unlink(missing_ok=True)
        raise
    for each in joined:
        directory = Path(each.participant.directory())
        devices.setdefault(os.stat(directory).st_dev, directory)
    faults.point("vault-written")
    retry: list[Job] = []
    refused: list[Job] = []
    by_folder: dict[int, list[Job]] = {}
    for job in batch:
        by_folder.setdefault(id(job.folder), []).append(job)
    for key, jobs in by_folder.items():
        folder = jobs[0].folder
        try:
            work = [(j.prepared, j.info) for j in jobs if j.prepared is not None]
            committed = folder.place(snapshots[key], work)
        except ShardMoving:
            for job in jobs:
                assert job.prepared is not None
                (folder.path / "tmp" / job.prepared.tmp_name).unlink(missing_ok=True)
            refused.extend(jobs)
            continue
        if committed:
            devices.setdefault(os.stat(folder.path).st_dev, folder.path)
        else:
            retry.extend(jobs)
    for path in devices.values():
        if HAVE_SYNCFS:
            syncfs(path)
    faults.point("delivery-synced")
    if not HAVE_SYNCFS:
        for jobs in by_folder.values():
            if jobs[0] not in retry and jobs[0] not in refused:
                jobs[0].folder.flush()
    return (retry, refused, gone), results


def _participate(joined: Sequence[Joined]) -> list[object]:
    """Worker thread: each participant writes its items of the batch (one call each) and
    flushes them as it chooses (:meth:`ICommitParticipant.flush`), before any mailbox file
    of the batch is placed; the results in the order the items joined."""
    by_participant: dict[int, list[Joined]] = {}
    for each in joined:
        by_participant.setdefault(id(each.participant), []).append(each)
    results: dict[int, object] = {}
    for group in by_participant.values():
        participant = group[0].participant
        written = participant.write([each.item for each in group])
        if len(written) != len(group):
            raise StoreError("a commit participant returned the wrong number of results")
        results.update((id(each), result) for each, result in zip(group, written, strict=True))
        participant.flush()
    return [results[id(each)] for each in joined]


def _prepare(job: Job) -> maildir.Prepared:
    """Write the job's message into its folder's ``tmp/``.  A copy follows its source file
    when a flag change (here or in another process) renamed it meanwhile; FileNotFoundError
    when the source was expunged."""
    for _ in range(2):
        try:
            return _write(job)
        except FileNotFoundError:
            moved = maildir.renamed(job.source) if isinstance(job.source, Path) else None
            if moved is None:
                raise
            job.source = moved
    return _write(job)


def _write(job: Job) -> maildir.Prepared:
    return maildir.prepare(
        job.folder.path, job.source, job.date, job.summary, not HAVE_SYNCFS, job.base
    )
