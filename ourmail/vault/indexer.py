"""Keeps the search index in step with the vault's segment log.

:meth:`Indexer.catch_up` reads the records after those already indexed: it remembers where
each ``blob`` is (a later ``capture`` may reuse an old body), turns each ``capture`` and its
body into a :class:`~ourmail.interfaces.VaultDocument` (:mod:`ourmail.vault.document`) and
adds them to the :class:`~ourmail.interfaces.IVaultIndex` in batches, one transaction each;
an ``expire`` record removes the messages it names.

Its own state lives in two small tables of ``index.sqlite`` (or the file given): the blobs'
positions, and a cursor (the next record's seq and position) so that a catch-up reads only
what is new, not whole segments again.  The cursor is trusted only while the index's
``last_seq`` is the one it was written with; otherwise the log is read from its start (the
index was reset or is another one), skipping what the index already has.

Implementation notes:

* One catch-up at a time, across threads and processes: :meth:`catch_up` holds a thread
  lock and an ``flock`` on ``<vault>/index.lock``, so the server and ``ourmail vault
  search`` (which catches up first) never index the same records twice.  It blocks: call
  it in a thread.  The server keeps the index in step from a process of its own
  (:mod:`ourmail.vault.indexfollow`, started by :class:`IndexerService`).
* Blob positions are written before the documents that need them, and the cursor after
  them, so a crash between the steps only makes the next catch-up redo some work.
* A frame cut short at the end of the log is a write in progress: the catch-up stops
  before it and the next one reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ourmail.interfaces import IVaultIndex, VaultDocument
from ourmail.vault import records
from ourmail.vault.document import document, plain
from ourmail.vault.index import IndexError_, SQLiteIndex
from ourmail.vault.records import FormatError, Record, Truncated
from ourmail.vault.segments import Position, SegmentLog

log = Logger()

#: Documents per transaction, and the most octets of bodies held in memory between them.
BATCH = 1000
BATCH_OCTETS = 64 * 1024 * 1024
#: How much of a segment is read at a time.
READ_CHUNK = 8 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS indexer_blobs (
    sha TEXT PRIMARY KEY, segment INTEGER NOT NULL, offset INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS indexer_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL, segment INTEGER NOT NULL, offset INTEGER NOT NULL,
    indexed INTEGER NOT NULL, inode INTEGER NOT NULL DEFAULT 0
);
"""

#: (next seq, segment, offset of the next frame): where a catch-up goes on from.
Cursor = tuple[int, int, int]


class Indexer:
    """Catches ``index`` up with ``log`` (see the module text).  ``state`` is the SQLite
    file for the indexer's own tables (default ``<vault>/index.sqlite``)."""

    def __init__(
        self,
        log: SegmentLog,
        index: IVaultIndex,
        state: Path | None = None,
        batch: int = BATCH,
    ) -> None:
        self.log = log
        self.index = index
        self.batch = batch
        self._thread_lock = threading.Lock()
        self._db = sqlite3.connect(
            state or log.root / "index.sqlite", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)

    # -- in a thread ----------------------------------------------------------------------

    def catch_up(self, limit: int | None = None) -> int:
        """Index what the log holds past the index (at most ``limit`` messages); the number
        of messages added.  Blocking; one at a time (see the module text).  FormatError when
        the log is damaged where it reads."""
        with self._locked():
            return self._catch_up(limit, None)

    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Forget the index and the indexer's state and index the whole log again;
        ``progress(messages, last seq)`` is called after each batch."""
        with self._locked():
            self.index.reset()
            with self._transaction():
                self._db.execute("DELETE FROM indexer_blobs")
                self._db.execute("DELETE FROM indexer_cursor")
            return self._catch_up(None, progress)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            self.log.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.log.root / "index.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _start(self, last: int) -> Cursor:
        row = self._db.execute(
            "SELECT seq, segment, offset, indexed, inode FROM indexer_cursor WHERE id = 1"
        ).fetchone()
        if row is None or row[3] != last:
            return 1, 0, 0
        seq, segment, offset, _, inode = row
        if offset and self._inode(segment) != inode:
            # Expiry rewrote the segment since: its offsets moved.  Read it again from its
            # start (the messages already indexed are skipped, its blobs' positions renewed).
            return seq, segment, 0
        return seq, segment, offset

    def _inode(self, segment: int) -> int:
        try:
            return os.stat(self.log.path_of(segment)).st_ino
        except FileNotFoundError:
            return 0

    def _catch_up(self, limit: int | None, progress: Callable[[int, int], None] | None) -> int:
        last = self.index.last_seq()
        cursor = self._start(last)
        batch = _Batch(self, cursor)
        for segment, offset, after, record in _frames(self.log, cursor[1], cursor[2]):
            fields = record.fields
            kind, seq = fields.get("kind"), int(fields["seq"])
            if kind == "blob" and isinstance(fields.get("sha256"), str):
                batch.blob(fields["sha256"], Position(segment, offset), plain(record, fields))
            elif kind == "capture" and seq > last:
                batch.documents.append(document(record, batch.body(fields.get("body"))))
            elif kind == "expire" and isinstance(fields.get("records"), list):
                batch.flush((seq + 1, segment, after))
                self.index.remove([s for s in fields["records"] if isinstance(s, int)])
            batch.cursor = (seq + 1, segment, after)
            if batch.full():
                batch.flush(batch.cursor)
                if progress is not None:
                    progress(batch.added, seq)
                if limit is not None and batch.added >= limit:
                    break
        batch.flush(batch.cursor)
        if progress is not None:
            progress(batch.added, batch.cursor[0] - 1)
        return batch.added

    def _blob_position(self, sha: str) -> Position | None:
        row = self._db.execute(
            "SELECT segment, offset FROM indexer_blobs WHERE sha = ?", (sha,)
        ).fetchone()
        return Position(row[0], row[1]) if row else None


class _Batch:
    """The documents, blob positions and bodies of one batch of a catch-up."""

    def __init__(self, indexer: Indexer, cursor: Cursor) -> None:
        self.indexer = indexer
        self.documents: list[VaultDocument] = []
        self.positions: dict[str, Position] = {}
        self.bodies: dict[str, bytes] = {}
        self.octets = 0
        self.added = 0
        self.cursor = cursor

    def blob(self, sha: str, position: Position, body: bytes) -> None:
        self.positions[sha] = position
        self.bodies[sha] = body
        self.octets += len(body)

    def body(self, sha: Any) -> bytes:
        """The body blob ``sha`` names: empty when there is none or retention removed it."""
        if not isinstance(sha, str):
            return b""
        body = self.bodies.get(sha)
        if body is None:
            position = self.positions.get(sha) or self.indexer._blob_position(sha)
            if position is None:
                return b""
            record = self._blob_at(position, sha)
            body = plain(record, record.fields) if record is not None else b""
        return body

    def _blob_at(self, position: Position, sha: str) -> Record | None:
        """The blob ``sha`` at ``position``, or found again in its segment when expiry
        rewrote that since (None: it is no longer there)."""
        log_ = self.indexer.log
        try:
            record = log_.read_at(position)
            if record.fields.get("sha256") == sha and record.fields.get("kind") == "blob":
                return record
        except (FormatError, ValueError):
            pass
        for segment, offset, _after, record in _frames(log_, position.segment, 0):
            if segment != position.segment:
                break
            if record.fields.get("kind") == "blob" and record.fields.get("sha256") == sha:
                self.positions[sha] = Position(segment, offset)
                return record
        return None

    def full(self) -> bool:
        return len(self.documents) >= self.indexer.batch or self.octets >= BATCH_OCTETS

    def flush(self, cursor: Cursor) -> None:
        """Write the blob positions, add the documents, then move the cursor."""
        indexer = self.indexer
        if self.positions:
            with indexer._transaction():
                indexer._db.executemany(
                    "INSERT OR REPLACE INTO indexer_blobs VALUES (?, ?, ?)",
                    ((sha, p.segment, p.offset) for sha, p in self.positions.items()),
                )
        if self.documents:
            indexer.index.add(self.documents)
        self.added += len(self.documents)
        with indexer._transaction():
            indexer._db.execute(
                "INSERT OR REPLACE INTO indexer_cursor VALUES (1, ?, ?, ?, ?, ?)",
                (*cursor, indexer.index.last_seq(), indexer._inode(cursor[1])),
            )
        self.documents, self.positions, self.bodies, self.octets = [], {}, {}, 0


def _frames(log: SegmentLog, segment: int, offset: int) -> Iterator[tuple[int, int, int, Record]]:
    """(segment, offset, offset after, record) of every record from ``segment`` at
    ``offset`` (0: its start) on, read in pieces.  Stops at a frame cut short at the end."""
    for number, path in log.segments():
        if number < segment:
            continue
        start = offset if number == segment else 0
        yield from ((number, *frame) for frame in _segment_frames(path, start))


def _segment_frames(path: Path, offset: int) -> Iterator[tuple[int, int, Record]]:
    with open(path, "rb") as f:
        if offset == 0:
            head = f.read(records.MAX_FRAME_LINE)
            if not head:
                return
            offset = records.parse_segment_header(head).length
        f.seek(offset)
        buf, base, pos = b"", offset, 0
        while True:
            try:
                record, after = records.parse_frame(buf, pos)
            except Truncated:
                more = f.read(READ_CHUNK)
                if not more:
                    return
                buf, base, pos = buf[pos:] + more, base + pos, 0
                continue
            except FormatError:
                raise FormatError(
                    f"vault segment {path.name} does not parse at offset {base + pos}: "
                    "see `ourmail vault verify`"
                ) from None
            yield base + pos, base + after, record
            pos = after


def caught_up_index(log: SegmentLog) -> IVaultIndex | None:
    """The vault's search index (``<vault>/index.sqlite``) caught up with the segments, for
    a command (None where SQLite lacks FTS5, so there is no index).  Blocking."""
    try:
        index = SQLiteIndex(log.root / "index.sqlite")
    except IndexError_:
        return None
    indexer = Indexer(log, index)
    try:
        indexer.catch_up()
    finally:
        indexer.close()
    return index


#: Seconds between tries to reap the follower process once it was told to end.
REAP_INTERVAL = 0.05


class _Follower(ProcessProtocol):
    """The follower process (:mod:`ourmail.vault.indexfollow`): what it says goes to the log."""

    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            log.warn("vault search index: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class IndexerService(Service):
    """Keeps the server's search index in step from a process of its own, started with the
    service (``command``: :func:`ourmail.vault.indexfollow.arguments`) and told to end, by
    closing its standard input, when the service stops; then the in-process index's files
    (the console's catch-ups) and ``closing`` (the vault's catalog) are closed.  Indexing
    thus never takes the interpreter that takes mail (docs/performance.md)."""

    name = "vault-indexer"
    #: Seconds the follower has to end before it is killed.
    GRACE = 10.0

    def __init__(
        self,
        indexer: Indexer,
        reactor: Any,
        command: Sequence[str],
        closing: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.indexer = indexer
        self.reactor = reactor
        self.command = list(command)
        #: What else to close when the service stops (the vault's catalog).
        self.closing = tuple(closing)
        self._follower: _Follower | None = None
        self._process: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._follower = _Follower()
        self._process = self.reactor.spawnProcess(
            self._follower,
            self.command[0],
            self.command,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r"},
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        follower, process = self._follower, self._process
        if follower is None or follower.ended.called:
            self._close()
            return None
        process.closeStdin()
        kill = self.reactor.callLater(self.GRACE, _kill, process)
        # Reap it ourselves: where the reactor has no SIGCHLD handler (a reactor run without
        # signal handlers) nothing else would, and ``ended`` would never fire.
        reap = LoopingCall(process.reapProcess)
        reap.clock = self.reactor
        reap.start(REAP_INTERVAL, now=False)

        def ended(_: object) -> None:
            reap.stop()
            if kill.active():
                kill.cancel()
            self._close()

        follower.ended.addCallback(ended)
        return follower.ended

    def _close(self) -> None:
        """The files of the in-process index and indexer, and ``closing``."""
        self.indexer.close()
        close_index = getattr(self.indexer.index, "close", None)
        for close in (close_index, *self.closing):
            if close is not None:
                close()


def _kill(process: Any) -> None:
    with contextlib.suppress(ProcessExitedAlready):
        process.signalProcess("KILL")
