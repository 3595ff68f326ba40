"""The admin console's way to the outbound queue (:class:`~ourmail.interfaces.IQueueAdmin`):
listings from a :class:`QueueIndex` kept in memory, changes through
:mod:`ourmail.manage.queueops` (the code of ``ourmail queue``), each in a worker thread and
audit-logged before its Deferred fires.

The index does not read 50,000 envelopes per page (bench/admin_ops.py).  It remembers each
envelope's summary with the file's identity (inode, modification time, size: a changed
envelope is a new file, written atomically by rename).  When the envelope directory has not
changed since the last look, a page costs one ``stat`` and a slice; when it has, the directory
is scanned (one ``stat`` per envelope) and only new or replaced envelopes are read, at most
once a second after the last one ended (:data:`RESCAN_EVERY`: the runner changes envelopes
all the time on a busy queue), and at once after a change made through the console.  A
directory changed within the last second is scanned again at the next look, as its
modification time may not yet tell a later change from this one (as git's "racy clean").
The first page after a start reads every envelope once; memory grows with the queue (a
summary per message).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.interfaces import (
    Actor,
    IAuditLog,
    IQueueAdmin,
    QueuedDetail,
    QueuedMessage,
    QueuePage,
    QueueRefused,
)
from ourmail.manage import queueops
from ourmail.queue.files import Envelope, QueueError, QueueFiles

#: A directory changed more recently than this (nanoseconds) is scanned again next time.
RACY_NS = 1_000_000_000
#: Seconds between two scans of a changing queue directory.
RESCAN_EVERY = 1.0

_Stamp = tuple[int, int, int]


class QueueIndex:
    """The queued messages' summaries, oldest first, re-read only where files changed.
    Blocking (it reads the queue directory): call :meth:`current` from a thread."""

    def __init__(self, files: QueueFiles, now_ns: Callable[[], int] = time.time_ns) -> None:
        self.files = files
        self.now_ns = now_ns
        self._lock = threading.Lock()
        self._dir_stamp: _Stamp | None = None
        self._known: dict[str, tuple[_Stamp, QueuedMessage, str]] = {}
        self._messages: list[QueuedMessage] = []
        self._texts: list[str] = []
        self._scanned = -RESCAN_EVERY
        self._stale = False
        #: Envelopes read since the index was made (for the benchmark and tests).
        self.reads = 0

    def invalidate(self) -> None:
        """Scan at the next look, however recent the last scan (after a change of ours)."""
        self._stale = True

    def current(self) -> tuple[list[QueuedMessage], list[str]]:
        """Every queued message in id order (the order of arrival), and beside each its
        lower-cased search text (sender and pending recipients)."""
        with self._lock:
            try:
                st = os.stat(self.files.envelopes)
            except FileNotFoundError:
                return [], []
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            recent = time.monotonic() - self._scanned < RESCAN_EVERY
            if stamp != self._dir_stamp and (self._stale or not recent):
                self._stale = False
                self._scan()
                self._scanned = time.monotonic()  # from its end: a scan may take a while
                racy = self.now_ns() - st.st_mtime_ns < RACY_NS
                self._dir_stamp = None if racy else stamp
            return self._messages, self._texts

    def _scan(self) -> None:
        known: dict[str, tuple[_Stamp, QueuedMessage, str]] = {}
        with os.scandir(self.files.envelopes) as entries:
            for entry in entries:
                name = entry.name
                if not name.endswith(".json") or name.startswith("."):
                    continue
                qid = name[:-5]
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # delivered or deleted meanwhile
                stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
                old = self._known.get(qid)
                if old is not None and old[0] == stamp:
                    known[qid] = old
                    continue
                try:
                    envelope = Envelope.from_json(_read(entry.path))
                except (FileNotFoundError, QueueError):
                    continue  # gone meanwhile, or half-written by hand: not listed
                self.reads += 1
                message = queueops.summary(envelope)
                known[qid] = (stamp, message, _search_text(message))
        self._known = known
        ordered = [known[q] for q in sorted(known)]
        self._messages = [m for _, m, _ in ordered]
        self._texts = [text for _, _, text in ordered]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _search_text(message: QueuedMessage) -> str:
    return "\0".join([message.sender, *(r.address for r in message.pending)]).lower()


@implementer(IQueueAdmin)
class LocalQueueAdmin:
    """:class:`IQueueAdmin` over ``<data>/queue`` (see the module docstring)."""

    def __init__(self, files: QueueFiles, audit: IAuditLog) -> None:
        self.files = files
        self.audit = audit
        self.index = QueueIndex(files)

    def page(self, text: str, offset: int, limit: int) -> Deferred[QueuePage]:
        return deferToThread(self.page_now, text, offset, limit)

    def page_now(self, text: str, offset: int, limit: int) -> QueuePage:
        """:meth:`page` in this thread (blocking)."""
        needle = text.lower()
        messages, texts = self.index.current()
        if needle:
            messages = [m for m, hay in zip(messages, texts, strict=True) if needle in hay]
        return QueuePage(tuple(messages[offset : offset + limit]), len(messages), offset)

    def message(self, qid: str) -> Deferred[QueuedDetail]:
        def read() -> QueuedDetail:
            queueops.check_id(qid)
            try:
                envelope = self.files.read(qid)
            except QueueError:
                raise QueueRefused("no-such-message", f"no such message: {qid}", qid) from None
            head = queueops.header(self.files, qid)
            return QueuedDetail(
                queueops.summary(envelope),
                queueops.recipients(envelope),
                head.decode("utf-8", "replace"),
            )

        return deferToThread(read)

    def change(self, actor: Actor, action: str, qid: str) -> Deferred[None]:
        if action not in queueops.CHANGES:
            raise ValueError(f"no such queue change: {action}")

        def run() -> None:
            try:
                queueops.audited(
                    self.audit,
                    actor,
                    queueops.ACTIONS[action],
                    qid[: queueops.MAX_ID],
                    lambda: queueops.CHANGES[action](self.files, qid),
                )
            finally:
                self.index.invalidate()  # the next page shows the change

        return deferToThread(run)
