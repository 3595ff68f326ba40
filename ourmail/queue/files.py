"""The outbound queue on disk: one message file and one envelope file per queued message.

Layout under ``<data>/queue/``::

    messages/<id>        the message as it will be sent (our Received: header first)
    envelopes/<id>.json  sender, recipients with their state, DSN parameters, schedule
    envelopes/<id>.results  results of the attempt under way, one JSON line per recipient,
                         appended as servers answer; folded into the envelope when it is
                         next written
    keys/<key>           a message queued once per key (:meth:`QueueFiles.add_once`): the id
                         it was queued under, then `` done`` once it left the queue
    lock                 flock(2)-ed by every writer (the queue runner and ``ourmail queue``)
    wakeup               touched by ``ourmail queue`` so the runner re-reads the envelopes

A message is queued when its envelope exists: :meth:`QueueFiles.add` writes and fsyncs the
message file, then writes the envelope atomically (temporary file, fsync, rename, fsync of the
directory).  A message file without an envelope is the remains of a crash before that point and
is removed at start.  Every change of an envelope is a read-modify-write under the lock, so the
runner never resurrects a message that ``ourmail queue delete`` removed while it was being sent.

Recording a result appends to the message's results file (and fsyncs it) instead of rewriting
the envelope: a message to 10,000 recipients sent one transaction per recipient (VERP) would
otherwise rewrite its 2 MB envelope 10,000 times.  Reading an envelope applies its results
file; applying a result twice changes nothing, so a crash between writing the envelope and
removing the results file loses nothing and duplicates nothing.

A caller that may queue the same message again after a crash (a mailing list's batch, queued
and then recorded in its own files) gives it a key: :meth:`QueueFiles.add_once` names the
new id under ``keys/<key>`` before adding the message, and :meth:`QueueFiles.discard` marks
the key ``done`` before the envelope goes, so at any instant the key says whether the
message is queued, was sent, or was never committed (then it is queued anew).  Keys are
kept :data:`KEY_SECONDS`.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS, MailParams, RcptParams
from ourmail.fsutil import fsync_dir, write_atomic

#: Recipient states; the last three are final.
PENDING, DELIVERED, RELAYED, FAILED = "pending", "delivered", "relayed", "failed"
#: How long a message's key is kept after it was queued: a message queued again with the
#: same key within it is not queued twice.
KEY_SECONDS = 7 * 86400


class QueueError(Exception):
    """No such queued message, or a queue file is unreadable."""


@attrs.define
class QueuedRecipient:
    address: str
    dsn: RcptParams = NO_RCPT_PARAMS
    state: str = PENDING
    #: RFC 3463 status of the last attempt, and the server's reply to it.
    status: str = ""
    diagnostic: str = ""
    remote_mta: str = ""
    last_attempt: float = 0.0
    #: Nothing more to report of this recipient: a DSN for its final state was queued, none
    #: was wanted, or the next server took the duty over (it offered DSN, RFC 3461 §4).
    reported: bool = False
    #: VERP envelopes: header fields (CRLF-terminated, octets as latin-1 text) put on top of
    #: this recipient's copy only, such as its one-click ``List-Unsubscribe`` (RFC 8058).
    personal: str = ""

    @property
    def final(self) -> bool:
        return self.state != PENDING


@attrs.define
class Envelope:
    id: str
    sender: str  # "" is the null reverse-path (RFC 5321 §4.5.5)
    recipients: list[QueuedRecipient]
    created: float
    size: int
    dsn: MailParams = NO_MAIL_PARAMS
    #: The message needs SMTPUTF8 (RFC 6531) or carries 8-bit data (RFC 6152).
    utf8: bool = False
    eight_bit: bool = False
    attempts: int = 0
    next_attempt: float = 0.0
    held: bool = False
    #: A delay warning was sent.
    warned: bool = False
    #: "Retry now" requests (``ourmail queue retry``, the console): one that comes while an
    #: attempt runs makes the next attempt due at once, not after the back-off.
    retries: int = 0
    #: VERP (as Postfix's XVERP): each recipient gets its own transaction, whose envelope
    #: sender names it (:func:`verp_sender`); the message file is stored unsigned and each
    #: copy is signed as it leaves, over its :attr:`QueuedRecipient.personal` fields too.
    verp: bool = False
    #: Mail that arrived from elsewhere and leaves again (signed only as its forwarder); kept
    #: for VERP envelopes, signed at send time.
    forwarded: bool = False
    #: The key it was queued under once (:meth:`QueueFiles.add_once`); "" for none.
    key: str = ""

    def sender_for(self, rcpt: QueuedRecipient) -> str:
        """The envelope sender of ``rcpt``'s transaction (and of the DSNs about it)."""
        return verp_sender(self.sender, rcpt.address) if self.verp else self.sender

    def pending(self) -> list[QueuedRecipient]:
        return [r for r in self.recipients if not r.final]

    def apply(self, results: list[Result]) -> None:
        """Record the outcome of an attempt for each recipient that is not final yet."""
        by_address = {r.address: r for r in results}
        for rcpt in self.recipients:
            result = by_address.get(rcpt.address)
            if result is None or rcpt.final:
                continue
            rcpt.status, rcpt.diagnostic = result.status, result.diagnostic
            rcpt.remote_mta, rcpt.last_attempt = result.remote_mta, result.when
            if result.ok:
                rcpt.state = DELIVERED if result.local else RELAYED
                rcpt.reported = result.dsn_passed
            elif result.status.startswith("5"):
                rcpt.state = FAILED

    def to_json(self) -> bytes:
        data = attrs.asdict(self, value_serializer=_serialise)
        return json.dumps(data, ensure_ascii=False, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Envelope:
        try:
            data = json.loads(raw)
            data["dsn"] = MailParams(**data["dsn"])
            rcpts = []
            for r in data["recipients"]:
                notify = r["dsn"]["notify"]
                r["dsn"] = RcptParams(
                    None if notify is None else frozenset(notify), r["dsn"]["orcpt"]
                )
                rcpts.append(QueuedRecipient(**r))
            data["recipients"] = rcpts
            return cls(**data)
        except (ValueError, KeyError, TypeError) as e:
            raise QueueError(f"unreadable envelope: {e}") from e


def verp_sender(sender: str, recipient: str) -> str:
    """``sender`` with ``+local=domain`` of ``recipient`` added to its local part
    (``list-bounces@example.test`` for ``bob@remote.test``:
    ``list-bounces+bob=remote.test@example.test``), so a bounce says whom it is for; the
    null sender stays null (RFC 5321 §4.5.5)."""
    if not sender or "@" not in sender:
        return sender
    local, _, domain = sender.rpartition("@")
    rlocal, _, rdomain = recipient.rpartition("@")
    return f"{local}+{rlocal}={rdomain}@{domain}"


@attrs.frozen
class Result:
    """One recipient's outcome of one attempt, as the results file keeps it."""

    address: str
    ok: bool
    status: str
    diagnostic: str
    #: The server that answered ("" when none was reached); empty too for delivery here.
    remote_mta: str
    #: Delivered here (the store), not relayed.
    local: bool
    when: float
    #: The next server took over the notifications (RFC 3461 §4).
    dsn_passed: bool = False


def _results(raw: bytes) -> list[Result]:
    """The results in a results file; a line a crash cut short (the last) is left out: its
    attempt was never reported as recorded."""
    found = []
    for line in raw.splitlines():
        try:
            found.append(Result(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return found


def _serialise(inst: object, field: object, value: Any) -> Any:
    return sorted(value) if isinstance(value, frozenset) else value


_sequence = itertools.count()


def new_id(now: float) -> str:
    """Sortable by arrival: the time in milliseconds, a sequence number, then random digits."""
    return f"{int(now * 1000):011x}{next(_sequence) % 0x10000:04x}{secrets.token_hex(2)}"


class QueueFiles:
    """The queue directory.  Blocking: call from a thread, or from the admin command."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.messages = root / "messages"
        self.envelopes = root / "envelopes"
        self.wakeup = root / "wakeup"
        self.keys = root / "keys"
        #: Keys whose add_once is under way in this process, and the condition to wait on.
        self._adding: set[str] = set()
        self._added = threading.Condition()

    def prepare(self) -> None:
        for d in (self.root, self.messages, self.envelopes, self.keys):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.wakeup.touch(exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def message_path(self, qid: str) -> Path:
        return self.messages / qid

    def _envelope_path(self, qid: str) -> Path:
        if not qid.isalnum():  # ids come from the command line too: no paths
            raise QueueError(f"no such message: {qid}")
        return self.envelopes / f"{qid}.json"

    def add(self, envelope: Envelope, content: bytes | Path) -> None:
        """Queue a message durably: message file, then the envelope that commits it."""
        path = self.message_path(envelope.id)
        if isinstance(content, Path):
            try:
                os.link(content, path)  # a spooled message: no copy
            except OSError:
                path.write_bytes(content.read_bytes())
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.messages)
        write_atomic(self._envelope_path(envelope.id), envelope.to_json())

    def _key_path(self, key: str) -> Path:
        if not key or not all(c.isalnum() or c in "-._" for c in key) or key[0] == ".":
            raise QueueError(f"not a queue key: {key!r}")
        return self.keys / key

    def add_once(self, envelope: Envelope, content: bytes | Path, key: str) -> str:
        """:meth:`add` once per ``key``: when a message was queued under ``key`` before (it is
        still queued, or was sent within :data:`KEY_SECONDS`), nothing is added; the id the
        message is queued under.  Takes the lock to read and write the key, not to add."""
        path = self._key_path(key)
        # One add_once of a key at a time (in this process: the one that distributes lists);
        # other keys' messages are written beside it, the queue lock held only for the key.
        with self._adding_key(key):
            with self.locked():
                try:
                    qid, _, state = path.read_text("ascii").partition(" ")
                except FileNotFoundError:
                    qid = state = ""
                if qid and (state == "done" or self._envelope_path(qid).exists()):
                    return qid
                envelope.key = key
                write_atomic(path, envelope.id.encode("ascii"))  # before: the module's notes
            self.add(envelope, content)
            return envelope.id

    @contextlib.contextmanager
    def _adding_key(self, key: str) -> Iterator[None]:
        with self._added:
            while key in self._adding:
                self._added.wait()
            self._adding.add(key)
        try:
            yield
        finally:
            with self._added:
                self._adding.discard(key)
                self._added.notify_all()

    def _results_path(self, qid: str) -> Path:
        return self.envelopes / f"{qid}.results"

    def read(self, qid: str) -> Envelope:
        try:
            envelope = Envelope.from_json(self._envelope_path(qid).read_bytes())
        except FileNotFoundError:
            raise QueueError(f"no such message: {qid}") from None
        with contextlib.suppress(FileNotFoundError):
            envelope.apply(_results(self._results_path(qid).read_bytes()))
        return envelope

    def record(self, results: dict[str, list[Result]]) -> None:
        """Append results to the results files of queued messages, durably; those of a
        message no longer queued are dropped.  Takes the lock."""
        with self.locked():
            created = False
            for qid, rcpts in results.items():
                if not self._envelope_path(qid).exists():
                    continue
                path = self._results_path(qid)
                created = created or not path.exists()
                lines = b"".join(json.dumps(attrs.asdict(r)).encode() + b"\n" for r in rcpts)
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    end = os.fstat(fd).st_size
                    if end and os.pread(fd, 1, end - 1) != b"\n":
                        lines = b"\n" + lines  # after a line a crash cut short
                    view = memoryview(lines)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            if created:
                fsync_dir(self.envelopes)

    def content(self, qid: str) -> bytes:
        return self.message_path(qid).read_bytes()

    def write(self, envelope: Envelope) -> None:
        """Store a changed envelope durably, its results folded in; call with the lock held."""
        write_atomic(self._envelope_path(envelope.id), envelope.to_json())
        self._results_path(envelope.id).unlink(missing_ok=True)

    def update(self, qid: str, change: Callable[[Envelope], None]) -> Envelope | None:
        """Apply ``change`` to the envelope under the lock and store it durably.

        Returns the new envelope, or None when the message is no longer queued.
        """
        with self.locked():
            try:
                envelope = self.read(qid)
            except QueueError:
                return None
            change(envelope)
            self.write(envelope)
            return envelope

    def remove(self, qid: str) -> bool:
        """Remove a message under the lock; False if it was not queued."""
        with self.locked():
            try:
                key = self.read(qid).key
            except QueueError:
                key = ""
            return self.discard(qid, key)

    def discard(self, qid: str, key: str = "") -> bool:
        """Remove a message (envelope first: that un-queues it), its ``key`` marked done
        first (it leaves the queue: not to be queued again); call with the lock held."""
        path = self._envelope_path(qid)
        if not path.exists():
            return False
        if key:
            with contextlib.suppress(FileNotFoundError):
                if self._key_path(key).read_text("ascii") == qid:
                    write_atomic(self._key_path(key), f"{qid} done".encode("ascii"))
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self.envelopes)
        self._results_path(qid).unlink(missing_ok=True)
        self.message_path(qid).unlink(missing_ok=True)
        return True

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.envelopes.glob("*.json") if not p.name.startswith("."))

    def remove_orphans(self, older_than: float = 600.0) -> int:
        """Message files whose envelope was never written (a crash mid-queueing), half-written
        envelope replacements, results files left by a crash in :meth:`discard`, and keys
        older than :data:`KEY_SECONDS` whose message is no longer queued."""
        queued = set(self.ids())
        removed = 0
        now = time.time()
        leftovers = [p for p in self.messages.iterdir() if p.name not in queued]
        leftovers += [
            p
            for p in self.envelopes.iterdir()
            if p.name.endswith(".tmp") or (p.suffix == ".results" and p.stem not in queued)
        ]
        for path in leftovers:
            if path.stat().st_mtime < now - older_than:
                path.unlink(missing_ok=True)
                removed += 1
        if self.keys.is_dir():
            for path in self.keys.iterdir():
                if path.stat().st_mtime >= now - max(older_than, KEY_SECONDS):
                    continue
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    if path.read_text("ascii").partition(" ")[0] not in queued:
                        path.unlink()
                        removed += 1
        return removed

    def poke(self) -> None:
        """Tell a running queue runner to re-read the envelopes."""
        os.utime(self.wakeup)
