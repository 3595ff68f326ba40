"""The vault's catalog: where each record is, and which body each blob holds.

``<vault>/catalog.sqlite`` maps a record's seq to its segment and offset (with its kind, time
and sizes, for ``ourmail vault status``), and a body's sha256 to the ``blob`` record that
holds it, so capture stores a body once and a message is read with two ``pread`` calls.

Implementation notes (keep these true when changing this module):

* The catalog is derived from the segments: the writer adds records right after appending
  them, in the same thread, without an fsync of its own (WAL, ``synchronous=NORMAL``; the
  store's ``syncfs`` covers it).  On open it catches up with whatever the log holds beyond
  its last seq, and it is rebuilt from scratch when missing or unreadable.  The segments'
  real tail (:meth:`SegmentLog.tail`, not the ``head`` file) is the truth: on open and before
  every capture, under the vault's lock, rows beyond it (left by a power cut that kept the
  catalog's write and lost the segments') are deleted (:meth:`Catalog.match_log`).
* A rebuild happens under the vault's lock; another process whose catalog file was replaced
  so reopens it (an inode check before each capture).
* Expiry rewrites segments (``ourmail/vault/expiry.py``), in this process or another, so
  the offsets catalogued for a segment may go stale: every read checks that the frame it
  finds is the record asked for, and catalogues that segment again when it is not.  An
  ``expire`` record forgets the blobs it names, so capture stores such a body again rather
  than point at content that is gone; the newest ``blob`` of a body is the one catalogued.
* Blocking: every method reads files or SQLite; call it in a thread, never on the reactor.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.logger import Logger

from ourmail.vault.records import FormatError, Record, parse_frame, parse_segment_header
from ourmail.vault.segments import Damaged, Position, SegmentLog

log = Logger()

FILE = "catalog.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time REAL NOT NULL,
    size INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    body TEXT
);
CREATE INDEX IF NOT EXISTS records_kind ON records (kind, time);
CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class Expired(LookupError):
    """The message's content (its header section or its body) was removed by retention."""


class NotAMessage(LookupError):
    """The seq names no ``capture`` record."""


@attrs.frozen
class Totals:
    """What ``ourmail vault status`` reports of the catalogued records."""

    kinds: dict[str, int]
    captures: int
    #: Captures whose body was already stored (by an earlier message): dedup.
    shared: int
    #: Octets of the captured messages as they came.
    original: int
    #: Octets the capture and blob records take in the segments.
    stored: int
    first: float | None
    last: float | None


class Catalog:
    """The catalog of one vault (see the module text).  Thread-safe: one connection behind
    a lock, shared by the committer's worker and any thread that reads."""

    def __init__(self, vault_dir: Path, log: SegmentLog) -> None:
        self.path = vault_dir / FILE
        self.log = log
        self._lock = threading.Lock()
        vault_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with log.locked():  # no other process appends, or rebuilds, meanwhile
            try:
                self._db = self._open()
                self.last_seq()
            except sqlite3.DatabaseError as e:
                self._rebuild(str(e))
            try:
                self.match_log()
            except Damaged as e:
                _damaged(e)
                self.catch_up()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._inode = os.stat(self.path).st_ino
        return db

    def match_log(self) -> None:
        """Bring the catalog in line with the segments' real tail (:meth:`SegmentLog.tail`):
        reopen the file when another process replaced it (a rebuild), forget rows beyond the
        tail (the catalog reached the disk and the segments' last write did not: a power cut),
        catch up when behind.  The caller holds ``log.locked()``; Damaged when the log's tail
        does not parse."""
        try:
            replaced = os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            replaced = True
        if replaced:
            with self._lock:
                self._db.close()
                self._db = self._open()
        seq, digest = self.log.tail()
        last = self.last_seq()
        if last > seq:
            log.warn(
                "the vault catalog names records {first} to {last} that the segments do not"
                " hold (lost in a crash before they were acknowledged): they are forgotten",
                first=seq + 1,
                last=last,
            )
            with self._lock, self._db:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM records WHERE seq > ?", (seq,))
                self._db.execute("DELETE FROM blobs WHERE seq > ?", (seq,))
            last = seq
        if last > 0 and not self._holds(last, digest if last == seq else None):
            self._rebuild(f"its record {last} is not the one in the segments")
            last = 0
        if last < seq:
            self.catch_up()

    def _holds(self, seq: int, digest: str | None) -> bool:
        """Whether the catalogued record ``seq`` is the one in the segments (its frame has that
        seq, kind and size there, and hash ``digest`` when given), its segment catalogued again
        first when a rewrite moved it."""
        row = self._one("SELECT kind, stored FROM records WHERE seq = ?", (seq,))
        try:
            found = self.record(seq)
            fields = found.fields
        except (FormatError, ValueError, KeyError, OSError):
            return False
        if fields.get("kind") != row[0] or (digest is not None and found.hash != digest):
            return False
        return row[1] == _frame_length(found) or fields.get("length") is not None

    def _rebuild(self, why: str) -> None:
        log.warn("rebuilding the vault catalog {path}: {why}", path=str(self.path), why=why)
        with self._lock:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._db = self._open()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Add what the log holds beyond the last seq catalogued (appended by another
        process, or before a crash); stops at a cut-short tail.  The number added."""
        added = 0
        batch: list[tuple[Position, Record]] = []
        try:
            for found in self._new_records():
                batch.append(found)
                if len(batch) >= 1000:
                    added += self.add(batch)
                    batch = []
        except FormatError as e:
            log.warn("vault catalog stops before damaged records: {e}", e=str(e))
        return added + self.add(batch)

    def _new_records(self) -> Iterator[tuple[Position, Record]]:
        """The records after the last one catalogued, read from where it ends: only the new
        part of its segment and the segments after it are read."""
        with self._lock:
            row = self._db.execute(
                "SELECT segment, offset, stored FROM records ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        if row is None:
            yield from ((Position(n, r.offset), r) for n, r in self.log.records())
            return
        last_segment, last_offset, last_stored = row
        last = self._one("SELECT max(seq) FROM records")[0]
        try:
            moved = self.log.read_at(Position(last_segment, last_offset)).seq != last
        except (FormatError, ValueError):
            moved = True
        if moved:  # the segment was rewritten since (expiry)
            self.recatalogue(last_segment)
            last_segment, last_offset, last_stored = self._one(
                "SELECT segment, offset, stored FROM records WHERE seq = ?", (last,)
            )
        for number, path in self.log.segments():
            if number < last_segment:
                continue
            with open(path, "rb") as f:
                if number == last_segment:
                    base = last_offset + last_stored
                    f.seek(base)
                    data, at = f.read(), 0
                else:
                    base = 0
                    data = f.read()
                    at = parse_segment_header(data).length
            while at < len(data):
                record, after = parse_frame(data, at)
                yield Position(number, base + at), attrs.evolve(record, offset=base + at)
                at = after

    def add(self, written: Sequence[tuple[Position, Record]]) -> int:
        """Catalogue records just appended (as :meth:`SegmentLog.append` returns them);
        records already catalogued are skipped.  The number added."""
        rows = []
        blobs = []
        gone: list[tuple[int]] = []
        for position, record in written:
            fields = record.fields
            seq = fields["seq"]
            kind = fields["kind"]
            stored = _frame_length(record)
            size = fields.get("size", fields.get("length", 0)) if kind == "capture" else 0
            body = fields.get("body") if kind == "capture" else fields.get("sha256")
            rows.append(
                (seq, position.segment, position.offset, kind, fields["time"], size, stored, body)
            )
            if kind == "blob":
                blobs.append((fields["sha256"], seq))
            elif kind == "expire":
                gone.extend((int(s),) for s in fields.get("records", ()))
        if not rows:
            return 0
        with self._lock, self._db:
            self._db.execute("BEGIN")
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            added = self._db.total_changes - before
            # The newest blob of a body wins: an older one may have been expired since.
            self._db.executemany("INSERT OR REPLACE INTO blobs VALUES (?, ?)", blobs)
            self._db.executemany("DELETE FROM blobs WHERE seq = ?", gone)
        return added

    # -- reading -------------------------------------------------------------------------------

    def _one(self, sql: str, args: Iterable[Any] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchone()

    def last_seq(self) -> int:
        """The highest seq catalogued (0: none)."""
        row = self._one("SELECT max(seq) FROM records")
        return int(row[0] or 0)

    def count(self) -> int:
        """Records catalogued."""
        return int(self._one("SELECT count(*) FROM records")[0])

    def position(self, seq: int) -> Position:
        """Where record ``seq`` is (KeyError when it is not catalogued)."""
        row = self._one("SELECT segment, offset FROM records WHERE seq = ?", (seq,))
        if row is None:
            raise KeyError(f"no vault record {seq}")
        return Position(row[0], row[1])

    def blob(self, sha256: str) -> int | None:
        """The seq of the ``blob`` record holding the body with this sha256, if any."""
        row = self._one("SELECT seq FROM blobs WHERE sha256 = ?", (sha256,))
        return None if row is None else int(row[0])

    def record(self, seq: int) -> Record:
        """Record ``seq`` as it is in its segment (its segment catalogued again first when
        a rewrite moved it)."""
        position = self.position(seq)
        try:
            found = self.log.read_at(position)
            if found.seq == seq:
                return found
        except (FormatError, ValueError, KeyError):
            pass
        self.recatalogue(position.segment)
        return self.log.read_at(self.position(seq))

    def recatalogue(self, segment: int) -> None:
        """Catalogue segment ``segment`` again (its offsets and sizes), after a rewrite."""
        rows = []
        for record in _frames(self.log.path_of(segment)):
            rows.append((_frame_length(record), record.offset, segment, record.seq))
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE records SET stored = ?, offset = ? WHERE segment = ? AND seq = ?", rows
            )

    def message(self, seq: int) -> bytes:
        """The message captured as record ``seq``: its header section and its body (Expired
        when retention removed either, NotAMessage when ``seq`` is no capture)."""
        try:
            capture = self.record(seq)
        except KeyError:
            raise NotAMessage(f"vault record {seq} does not exist") from None
        fields = capture.fields
        if fields["kind"] != "capture":
            raise NotAMessage(f"vault record {seq} is a {fields['kind']}, not a message")
        if fields.get("length") and not capture.content:
            raise Expired(f"message {seq} was removed by retention")
        blob_seq = self.blob(fields["body"])
        if blob_seq is None:
            raise Expired(f"the body of message {seq} is not in the vault")
        blob = self.record(blob_seq)
        found = blob.fields
        if found.get("kind") != "blob" or found.get("sha256") != fields["body"]:
            raise Expired(f"the body of message {seq} is not in the vault (the catalog is wrong)")
        if found.get("length") and not blob.content:
            raise Expired(f"the body of message {seq} was removed by retention")
        return capture.plain() + blob.plain()

    def captures(self, start: int = 1) -> Iterator[tuple[int, float, int]]:
        """Every capture from seq ``start`` on, in order: seq, time and message size."""
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, time, size FROM records WHERE kind = 'capture' AND seq >= ?"
                    " ORDER BY seq LIMIT 1000",
                    (start,),
                ).fetchall()
            if not rows:
                return
            yield from ((int(s), float(t), int(z)) for s, t, z in rows)
            start = rows[-1][0] + 1

    def totals(self) -> Totals:
        """Counts and octets of everything catalogued, for ``ourmail vault status``."""
        with self._lock:
            kinds = dict(self._db.execute("SELECT kind, count(*) FROM records GROUP BY kind"))
            original, first, last = self._db.execute(
                "SELECT sum(size), min(time), max(time) FROM records WHERE kind = 'capture'"
            ).fetchone()
            (stored,) = self._db.execute(
                "SELECT sum(stored) FROM records WHERE kind IN ('capture', 'blob')"
            ).fetchone()
        captures = kinds.get("capture", 0)
        return Totals(
            kinds=kinds,
            captures=captures,
            shared=max(0, captures - kinds.get("blob", 0)),
            original=int(original or 0),
            stored=int(stored or 0),
            first=first,
            last=last,
        )


def _damaged(error: Damaged) -> None:
    """Log that the segments' tail does not parse (the catalog stays as far as it reads)."""
    log.warn("the vault's segments are damaged at their end: {e}", e=str(error))


def _frame_length(record: Record) -> int:
    """Octets the record's frame takes in its segment (without building the frame)."""
    line = b"R %s %d %d\n" % (record.hash.encode(), len(record.meta), len(record.content))
    return len(line) + len(record.meta) + len(record.content) + 1


def _frames(path: Path) -> Iterator[Record]:
    """Every record of the segment at ``path``, with its offset."""
    with open(path, "rb") as f:
        data = f.read()
    at = parse_segment_header(data).length
    while at < len(data):
        record, after = parse_frame(data, at)
        yield attrs.evolve(record, offset=at)
        at = after
