"""The outbound queue: durable, retried delivery to other servers, with DSNs.

Implementation notes (keep these true when changing this module):

* A message is queued, and may be acknowledged to its submitter, only once its files are
  durable (``QueueFiles.add``: message fsync, envelope written atomically).  The SMTP server
  sends ``250`` after :meth:`OutboundQueue.enqueue`'s Deferred fires (through
  :class:`~ourmail.interfaces.IOutboundQueue`).
* A recipient's result is recorded durably right after the server that took the message
  answered; a crash between that ``250`` and the record is the only way a message goes out twice
  (RFC 5321 §6.1 accepts that duplicate; losing the message would not be).  Results are
  appended to the message's results file, those that arrive together in one write and fsync
  (``_record``), so a message sent in thousands of transactions is not rewritten each time.
* Every envelope change is a read-modify-write under the queue lock (``QueueFiles.update``), in
  a thread, so ``ourmail queue`` can hold, release or delete while the runner works, and disk
  waits never block the reactor.
* Messages are grouped by destination (the recipient domain, or the smart host); each
  destination has at most ``max_per_destination`` connections, each carrying up to
  ``messages_per_connection`` messages (RFC 5321 §3.3).
* Temporary (4xx) and permanent (5xx) outcomes are per recipient.  Retries back off
  exponentially from ``retry_first`` to ``max_retry_interval``; after ``max_age`` the rest fails
  with 4.4.7.  Notifications follow RFC 3461 NOTIFY (default: failure and delay); a message
  from the null sender never gets one (RFC 5321 §4.5.5).
* Recipients in a local domain (a bounce to a local sender, an alias's targets) are handed to
  :class:`~ourmail.interfaces.ILocalDelivery` (``smtp/delivery.py``, the same checks and
  fan-out as SMTP); the queue never writes to the store itself.
* A VERP envelope (``enqueue(..., verp=True)``, mailing lists) sends each recipient in its
  own transaction with its own envelope sender (``files.verp_sender``), locally too; the
  transactions of one domain share a job, so they go over one connection one after the
  other, each one's results recorded before the next begins (a crash resends nobody
  already recorded).  Each transaction's outcome is its own: when one breaks the
  connection, the ones not tried yet go over another connection (or, when the connection
  took nothing, wait for the next attempt), never sharing the broken one's status.  Local
  recipients are delivered :data:`LOCAL_VERP_AT_ONCE` at a time.  Its message file is
  stored unsigned; each copy is DKIM-signed as it leaves (in a thread, the body hashed
  once per attempt), over the recipient's own header fields too (RFC 8058 §4).  DSNs about
  a recipient go to its VERP sender, so the list learns whose address failed.
* DSNs are built outside the queue lock (building one parses the message); the envelope
  read that decides them, and their queueing, happen under it (``_finish``).
* Scheduling decisions read ``clock`` (a test passes a ``task.Clock``); the network and the
  immediate kicks use the reactor.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.config import QueueSettings
from ourmail.dsnparams import NO_MAIL_PARAMS, MailParams, RcptParams
from ourmail.interfaces import IDirectory, ILocalDelivery, IMessageSigner, IOutboundQueue
from ourmail.net.dns import make_resolver
from ourmail.net.metrics import Metrics
from ourmail.queue import dsn
from ourmail.queue.client import ClientSession, Outgoing, RcptResult, SessionError
from ourmail.queue.files import (
    DELIVERED,
    FAILED,
    RELAYED,
    Envelope,
    QueuedRecipient,
    QueueError,
    QueueFiles,
    Result,
    new_id,
)
from ourmail.queue.mtasts import PolicyStore
from ourmail.queue.mx import MXResolver, RouteError
from ourmail.queue.remote import Connector, Route, route_for
from ourmail.queue.tlsrpt import TLSReports

log = Logger()

#: Messages being attempted at once, and the most message bytes they may hold in memory (a
#: message bigger than that still goes, alone).
MAX_ACTIVE = 200
MAX_LOADED = 256 << 20
#: Recipients per transaction (RFC 5321 §4.5.3.1.8: servers must take 100, may refuse more).
RCPTS_PER_MESSAGE = 100
#: A VERP envelope's deliveries here (one transaction and copy per recipient) under way at
#: once: enough to share the store's group commits, few enough not to flood it.
LOCAL_VERP_AT_ONCE = 8
#: Seconds between looks for TLS-RPT reports to send (each day's go out once it is over).
REPORT_INTERVAL = 3600
_ACTIONS = {FAILED: "failed", DELIVERED: "delivered", RELAYED: "relayed"}


def _fields(personal: bytes) -> str:
    """Header fields as stored in an envelope: CRLF-terminated, octets as latin-1 text."""
    if personal and not personal.endswith(b"\r\n"):
        personal += b"\r\n"
    return personal.decode("latin-1")


def _write_parts(path: Path, *parts: bytes) -> None:
    """Write ``parts`` one after the other to a new file (no joined copy in memory)."""
    with open(path, "xb") as f:
        for part in parts:
            f.write(part)


def _report_failed(failure: object) -> int:
    log.failure("tls-rpt: sending reports", failure)
    return 0


@attrs.frozen
class Notice:
    """A notification to send: to whom, and what it says of which recipients."""

    to: str
    statuses: tuple[dsn.RecipientStatus, ...]


@attrs.define
class Job:
    """Messages for one destination (one, or a VERP envelope's transactions), waiting for
    or using a connection: sent one after the other on it."""

    messages: list[Outgoing]
    #: Records one transaction's results durably, with the server that answered them (""
    #: when none was reached).  A connection sends the job's next transaction only once it
    #: has fired, so a crash can leave at most one accepted-but-unrecorded transaction per
    #: connection, and a restart resends no recipient already recorded.
    record: Callable[[list[RcptResult], str], Deferred[None]]
    #: Fires once every transaction of the job has its results recorded, or was left for
    #: the next attempt (a connection broke and nothing got through it).
    done: Deferred[None] = attrs.Factory(Deferred)

    def fail(self, status: str, diagnostic: str) -> None:
        """Every transaction gets the same answer (the destination cannot be reached)."""
        recorded = self.record(_refused(self.messages, status, diagnostic), "")
        recorded.addCallbacks(lambda _: self.done.callback(None), self.done.errback)


def _refused(messages: Sequence[Outgoing], status: str, diagnostic: str) -> list[RcptResult]:
    return [RcptResult(a, False, status, diagnostic) for m in messages for a, _ in m.recipients]


class Destination:
    """The connections to one destination, and the jobs waiting for them."""

    def __init__(self, queue: OutboundQueue, route: Route) -> None:
        self.queue = queue
        self.route = route
        self.jobs: deque[Job] = deque()
        self.workers = 0

    def submit(self, job: Job) -> None:
        self.jobs.append(job)
        self.spawn()

    def spawn(self) -> None:
        settings = self.queue.settings
        while (
            self.jobs
            and self.workers < min(settings.max_per_destination, len(self.jobs))
            and self.queue.connections < settings.max_connections
        ):
            self.workers += 1
            self.queue.connections += 1
            Deferred.fromCoroutine(self._work()).addErrback(
                lambda f: log.failure("queue: worker for {dest} failed", f, dest=self.route.key)
            ).addBoth(self._worker_done)

    def _worker_done(self, _: object) -> None:
        self.workers -= 1
        self.queue.connection_closed()  # lets waiting destinations, this one too, connect
        self.spawn()

    async def _work(self) -> None:
        try:
            session = await self.queue.connector.open(self.route)
        except (RouteError, SessionError) as e:
            self._fail_waiting(e.status, e.diagnostic)
            return
        sent = 0
        try:
            while self.jobs and sent < self.queue.settings.messages_per_connection:
                job = self.jobs.popleft()
                try:
                    rest, taken = await self._send(session, job)
                except Exception:  # its results could not be recorded: the attempt ends
                    job.done.errback(Failure())
                    break
                if rest and (taken or sent):
                    # The connection broke after it took some mail: the transactions not
                    # tried yet go over another connection, each one's outcome its own.
                    self.jobs.appendleft(attrs.evolve(job, messages=rest))
                else:
                    # Done, or broken at once: the rest wait for the next attempt (its
                    # back-off) rather than cost the server one connection each.
                    job.done.callback(None)
                if rest:
                    break
                sent += 1  # a VERP job's transactions count as the one queued message
        finally:
            await session.quit()

    async def _send(self, session: ClientSession, job: Job) -> tuple[list[Outgoing], int]:
        """Send ``job``'s transactions one after the other, each one's results recorded
        before the next begins.  When the session breaks, the transaction under way gets
        the error as its own outcome (a temporary one for a lost connection).  Returns the
        transactions not tried yet and how many were taken before the break."""
        for i, message in enumerate(job.messages):
            broken = True
            try:
                results = await session.send(message)
                broken = False
            except SessionError as e:
                results = _refused([message], e.status, e.diagnostic)
            except Exception as e:  # connection lost or timed out
                why = f"lost connection with {session.host}: {e}"
                results = _refused([message], "4.4.2", why)
            await job.record(results, session.host)
            if broken:
                return job.messages[i + 1 :], i
        return [], len(job.messages)

    def _fail_waiting(self, status: str, diagnostic: str) -> None:
        """The destination cannot be reached now: every waiting job gets the same answer."""
        log.info(
            "queue: {dest}: {status} {why}", dest=self.route.key, status=status, why=diagnostic
        )
        while self.jobs:
            self.jobs.popleft().fail(status, diagnostic)


@implementer(IOutboundQueue)
class OutboundQueue(Service):
    """Queues messages for other servers and delivers them; also the way back for DSNs."""

    name = "queue"

    def __init__(
        self,
        settings: QueueSettings,
        data_dir: Path,
        hostname: str,
        directory: IDirectory,
        local: ILocalDelivery,
        reactor: IReactorTCP,
        clock: IReactorTime | None = None,
        report_from: str = "",
    ) -> None:
        self.settings = settings
        self.files = QueueFiles(data_dir / "queue")
        self.hostname = hostname
        self.directory = directory
        #: Where mail for a local domain goes (``ourmail.smtp.delivery``, wired by service.py).
        self.local = local
        #: DKIM signing of what is queued (``ourmail.secure.dkimsign``, wired by service.py).
        self.signer: IMessageSigner | None = None
        self.reactor = reactor
        self.clock: IReactorTime = clock or reactor  # type: ignore[assignment]
        self.resolver = make_resolver(settings.dns_servers)
        mx = MXResolver(self.resolver)
        #: MTA-STS policies (RFC 8461) and the TLS-RPT record (RFC 8460), unless switched off.
        self.sts: PolicyStore | None = None
        self.tls_reports: TLSReports | None = None
        #: Where the reports this queue writes go (``service.py`` puts the vault's capture
        #: in front: ``ourmail.vault.outbound``); this queue itself by default.
        self.reports: IOutboundQueue = self
        if settings.mta_sts:
            self.sts = PolicyStore(
                data_dir / "queue" / "mta-sts",
                mx,
                reactor,
                reactor,  # type: ignore[arg-type]
                settings.mta_sts_port,
                settings.mta_sts_ca_file,
                settings.mta_sts_timeout,
            )
            self.tls_reports = TLSReports(
                data_dir / "queue" / "tlsrpt", hostname, report_from or f"postmaster@{hostname}"
            )
        self.connector = Connector(
            reactor,
            reactor,  # type: ignore[arg-type]
            mx,
            settings,
            hostname,
            self.sts,
            self.tls_reports,
        )
        self.connections = 0
        #: Counts remote deliveries, deferrals and bounces (wired by service.py).
        self.metrics = Metrics()
        self._destinations: dict[Route, Destination] = {}
        self._due: dict[str, float] = {}
        self._active: set[str] = set()
        self._wakeup_stamp = 0.0
        self._discovering = False
        self._loaded = 0
        self._idle: list[Deferred[None]] = []
        #: Results waiting for the write under way (``_record``).
        self._unrecorded: list[tuple[str, list[Result], Deferred[None]]] = []
        self._recording = False
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._reports_loop = LoopingCall(self.send_tls_reports)
        self._reports_loop.clock = self.clock

    # -- service ---------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.files.prepare()
        removed = self.files.remove_orphans()
        if removed:
            log.info("queue: removed {n} files of messages never queued", n=removed)
        self._due = self._scan()
        self._wakeup_stamp = os.stat(self.files.wakeup).st_mtime
        self._loop.start(1.0, now=False)
        if self.tls_reports is not None:
            self._reports_loop.start(REPORT_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        for loop in (self._loop, self._reports_loop):
            if loop.running:
                loop.stop()

    def send_tls_reports(self) -> Deferred[int]:
        """Queue the TLS-RPT reports (RFC 8460) of the days that are over; how many."""
        if self.tls_reports is None:
            return defer.succeed(0)
        d = Deferred.fromCoroutine(
            self.tls_reports.send(self.clock.seconds(), self.resolver, self.reports.enqueue)
        )
        return d.addErrback(_report_failed)

    # -- queueing --------------------------------------------------------------------------

    def enqueue(
        self,
        sender: str,
        recipients: Sequence[tuple[str, RcptParams]],
        content: bytes | Path,
        mail_params: MailParams = NO_MAIL_PARAMS,
        utf8: bool = False,
        forwarded: bool = False,
        verp: bool = False,
        personal: Mapping[str, bytes] | None = None,
        key: str = "",
    ) -> Deferred[str]:
        """Queue ``content`` durably, DKIM-signed once here (as its forwarder when
        ``forwarded``), or, with ``verp``, unsigned with each recipient's ``personal``
        header fields, each copy signed as it leaves; the Deferred fires with the queue id
        once it is.  With ``key``, once: a message queued under the same key before is not
        queued again (``QueueFiles.add_once``); the Deferred fires with its id."""
        now = self.clock.seconds()
        unique = dict(recipients)  # one copy per address
        own = personal or {}
        envelope = Envelope(
            id=new_id(now),
            sender=sender,
            recipients=[
                QueuedRecipient(a, p, personal=_fields(own.get(a, b"")) if verp else "")
                for a, p in unique.items()
            ],
            created=now,
            size=0,
            dsn=mail_params,
            utf8=utf8,
            next_attempt=now,
            verp=verp,
            forwarded=forwarded and verp,
        )

        def add() -> str:
            data = content.read_bytes() if isinstance(content, Path) else content
            signature = b"" if verp else self._signature(data, sender, forwarded)
            envelope.size = len(signature) + len(data)
            envelope.eight_bit = not data.isascii()
            header = data[: data.find(b"\r\n\r\n") + 1 or len(data)]
            addresses = [sender, *unique]
            # RFC 6531 §3.2: SMTPUTF8 only where the envelope or header needs it.
            envelope.utf8 = utf8 and not (header.isascii() and all(a.isascii() for a in addresses))
            stored = signature + data if signature else content
            if key:
                return self.files.add_once(envelope, stored, key)
            self.files.add(envelope, stored)
            return envelope.id

        def queued(qid: str) -> str:
            if qid != envelope.id:
                log.info("queue: {key} was queued before, as {id}", key=key, id=qid)
                return qid
            log.info(
                "queue: {id} from <{sender}> to {rcpts} ({size} bytes)",
                id=qid,
                sender=sender,
                rcpts=list(unique),
                size=envelope.size,
            )
            self.schedule(qid, now)
            return qid

        return deferToThread(add).addCallback(queued)

    def _signature(
        self, data: bytes, sender: str, forwarded: bool, body_hash: bytes | None = None
    ) -> bytes:
        """The DKIM-Signature fields for ``data`` (its header section will do with the
        ``body_hash`` of :meth:`IMessageSigner.body_hash`), or none when signing fails: the
        message goes unsigned (logged), never lost for want of a signature.  Blocking (a
        thread)."""
        if self.signer is None:
            return b""
        try:
            if body_hash is not None:
                return self.signer.signature(data, sender, forwarded, body_hash=body_hash)
            return self.signer.signature(data, sender, forwarded)
        except Exception as e:  # dkimpy raises several kinds on odd messages
            log.error("queue: message from <{sender}> queued unsigned: {e!r}", sender=sender, e=e)
            return b""

    def report_delivered(
        self,
        sender: str,
        mail_params: MailParams,
        arrival: float,
        content: bytes | Path,
        delivered: Sequence[tuple[str, RcptParams]],
    ) -> Deferred[object]:
        """Queue a success DSN (RFC 3461 §5.2.2) for recipients delivered here that asked."""
        wanted = [(a, p) for a, p in delivered if p.wants("SUCCESS")]
        if not sender or not wanted:
            return defer.succeed(None)
        now = self.clock.seconds()

        def build() -> str:
            data = content.read_bytes() if isinstance(content, Path) else content
            statuses = [
                dsn.RecipientStatus(f"rfc822;{a}", "delivered", "2.0.0", p.orcpt) for a, p in wanted
            ]
            return self._add_report(sender, mail_params, arrival, data, statuses, now)

        return deferToThread(build).addCallback(lambda qid: self.schedule(qid, now))

    def schedule(self, qid: str | None, when: float) -> None:
        """Plan an attempt; only a started queue (the master process's) delivers."""
        if qid is None or not self.running:
            return
        self._due[qid] = when
        self.reactor.callLater(0, self.tick)  # type: ignore[attr-defined]

    # -- the runner ------------------------------------------------------------------------

    def tick(self) -> None:
        """Start the attempts that are due; notice ``ourmail queue`` changes."""
        try:
            stamp = os.stat(self.files.wakeup).st_mtime
        except FileNotFoundError:
            stamp = 0.0
        if stamp != self._wakeup_stamp:
            self._wakeup_stamp = stamp
            deferToThread(self._scan).addCallback(self._rescanned)
        elif not self._discovering:  # messages queued by other processes (MX workers)
            self._discovering = True
            known = set(self._due) | self._active
            d = deferToThread(self._scan, known, False)
            d.addCallback(self._discovered)
            d.addErrback(lambda f: log.failure("queue: scanning for new messages", f))
            d.addBoth(lambda _: setattr(self, "_discovering", False))
        now = self.clock.seconds()
        for qid, when in sorted(self._due.items(), key=lambda item: item[1]):
            if when > now or len(self._active) >= MAX_ACTIVE:
                break
            if qid not in self._active:
                self._active.add(qid)
                d = Deferred.fromCoroutine(self._attempt(qid))
                d.addErrback(lambda f, qid=qid: log.failure("queue: attempt on {id}", f, id=qid))
                d.addBoth(lambda _, qid=qid: self._attempt_done(qid))

    def backlog(self) -> tuple[int, float | None]:
        """The messages this (started) queue knows of and the creation time of the oldest
        (None: empty), from memory: message ids begin with their creation time (new_id)."""
        if not self._due:
            return 0, None
        oldest = min(self._due)
        try:
            return len(self._due), int(oldest[:11], 16) / 1000
        except ValueError:  # not one of new_id's: its age is not known
            return len(self._due), None

    def _discovered(self, found: dict[str, float]) -> None:
        for qid, when in found.items():
            self._due.setdefault(qid, when)
        if found:
            self.tick()

    def _rescanned(self, due: dict[str, float]) -> None:
        self._due = due
        self.tick()

    def _scan(self, known: AbstractSet[str] = frozenset(), full: bool = True) -> dict[str, float]:
        """The schedule of the queued messages not in ``known``: all of them at start and after
        ``ourmail queue`` (``full``), the new ones each second (queued by other processes).
        An unreadable envelope is logged by full scans only; a vanished one was finished."""
        due: dict[str, float] = {}
        for qid in self.files.ids():
            if qid in known:
                continue
            try:
                envelope = self.files.read(qid)
            except QueueError as e:
                if full:
                    log.error("queue: {id}: {error}", id=qid, error=str(e))
                continue
            due[qid] = math.inf if envelope.held else envelope.next_attempt
        return due

    def _attempt_done(self, qid: str) -> None:
        self._active.discard(qid)
        if not self._active:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def when_idle(self) -> Deferred[None]:
        """Fires when no attempt is running (tests use it after advancing the clock)."""
        if not self._active:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def connection_closed(self) -> None:
        """A connection slot is free: destinations that wait get it; idle ones are forgotten."""
        self.connections -= 1
        for route, destination in list(self._destinations.items()):
            if destination.jobs:
                destination.spawn()
            elif not destination.workers:
                del self._destinations[route]

    async def _attempt(self, qid: str) -> None:
        try:
            envelope = await deferToThread(self.files.read, qid)
        except QueueError:
            self._due.pop(qid, None)
            return
        if envelope.held:
            self._due[qid] = math.inf
            return
        now = self.clock.seconds()
        if self._loaded and self._loaded + envelope.size > MAX_LOADED:
            self._due[qid] = now + 1  # memory is taken by messages being sent; soon
            return
        if now < envelope.created + self.settings.max_age:
            self._loaded += envelope.size
            try:
                await self._deliver_all(envelope)
            finally:
                self._loaded -= envelope.size
        next_attempt, reports = await deferToThread(
            self._finish, qid, self.clock.seconds(), envelope.retries
        )
        if next_attempt is None:
            self._due.pop(qid, None)
        else:
            self._due[qid] = next_attempt
        for report in reports:
            self.schedule(report, now)

    async def _deliver_all(self, envelope: Envelope) -> None:
        """One attempt for every pending recipient: a transaction per domain and 100 of them
        (a VERP envelope: one per recipient)."""
        content = await deferToThread(self.files.content, envelope.id)
        body_hash = None  # a VERP envelope's copies are signed as they leave: hashed once
        if envelope.verp and self.signer is not None:
            body_hash = await deferToThread(self._body_hash, envelope.id, content)
        by_domain: dict[str, list[QueuedRecipient]] = {}
        for rcpt in envelope.pending():
            by_domain.setdefault(rcpt.address.rpartition("@")[2], []).append(rcpt)
        work: list[Deferred[None]] = []
        for domain, rcpts in by_domain.items():
            if envelope.verp and self.directory.is_local_domain(domain):
                work.append(
                    Deferred.fromCoroutine(self._deliver_verp_local(envelope, rcpts, content))
                )
                continue
            work += [
                Deferred.fromCoroutine(
                    self._deliver(
                        envelope, domain, rcpts[i : i + RCPTS_PER_MESSAGE], content, body_hash
                    )
                )
                for i in range(0, len(rcpts), RCPTS_PER_MESSAGE)
            ]
        for ok, result in await defer.DeferredList(work, consumeErrors=True):
            if not ok:
                log.failure("queue: {id}: delivery attempt", result, id=envelope.id)

    async def _deliver(
        self,
        envelope: Envelope,
        domain: str,
        rcpts: list[QueuedRecipient],
        content: bytes,
        body_hash: bytes | None = None,
    ) -> None:
        if self.directory.is_local_domain(domain):
            local = await self.local.deliver_queued(
                envelope.id,
                envelope.sender,
                [(r.address, r.dsn) for r in rcpts],
                self.files.message_path(envelope.id),
                envelope.size,
                envelope.dsn,
                envelope.utf8,
            )
            results = [RcptResult(r.address, r.ok, r.status, r.reply) for r in local]
            await self._log_and_record(envelope.id, domain, None, results)
            return
        route = route_for(domain, self.settings)
        destination = self._destinations.get(route)
        if destination is None:
            destination = self._destinations[route] = Destination(self, route)
        if envelope.verp:
            prefixes = await deferToThread(self._verp_prefixes, envelope, rcpts, content, body_hash)
            messages = [
                Outgoing(
                    envelope.sender_for(r),
                    [(r.address, r.dsn)],
                    content,
                    envelope.dsn,
                    envelope.utf8,
                    envelope.eight_bit,
                    prefix,
                )
                for r, prefix in zip(rcpts, prefixes, strict=True)
            ]
        else:
            messages = [
                Outgoing(
                    envelope.sender,
                    [(r.address, r.dsn) for r in rcpts],
                    content,
                    envelope.dsn,
                    envelope.utf8,
                    envelope.eight_bit,
                )
            ]

        def record(results: list[RcptResult], host: str) -> Deferred[None]:
            # host is "" when no server was reached
            return Deferred.fromCoroutine(self._log_and_record(envelope.id, domain, host, results))

        job = Job(messages, record)
        destination.submit(job)
        await job.done

    async def _deliver_verp_local(
        self, envelope: Envelope, rcpts: list[QueuedRecipient], content: bytes
    ) -> None:
        """A VERP envelope's recipients here, each its own transaction: at most
        :data:`LOCAL_VERP_AT_ONCE` at a time (they still share the store's group commits),
        each one's result recorded before its worker starts the next.  A worker that fails
        leaves its recipient pending (retried at the next attempt); the others go on."""
        waiting = iter(rcpts)
        domain = rcpts[0].address.rpartition("@")[2]

        async def worker() -> None:
            for rcpt in waiting:
                results = await self._deliver_verp_here(envelope, rcpt, content)
                await self._log_and_record(envelope.id, domain, None, results)

        workers = [
            Deferred.fromCoroutine(worker()) for _ in range(min(LOCAL_VERP_AT_ONCE, len(rcpts)))
        ]
        for ok, result in await defer.DeferredList(workers, consumeErrors=True):
            if not ok:
                log.failure("queue: {id}: delivery here", result, id=envelope.id)

    def _body_hash(self, qid: str, content: bytes) -> bytes | None:
        """The DKIM body hash of a VERP envelope's content, or None: its copies go unsigned
        (logged), never held back for want of a signature.  Blocking (a thread)."""
        assert self.signer is not None
        try:
            return self.signer.body_hash(content)
        except Exception as e:  # dkimpy raises several kinds on odd messages
            log.error("queue: {id} sent unsigned: {e!r}", id=qid, e=e)
            return None

    def _verp_prefixes(
        self,
        envelope: Envelope,
        rcpts: list[QueuedRecipient],
        content: bytes,
        body_hash: bytes | None,
    ) -> list[bytes]:
        """Each VERP copy's own header fields under its DKIM signature (with ``body_hash``),
        which covers them (RFC 8058 §4).  Blocking (a thread)."""
        end = content.find(b"\r\n\r\n")
        head = content[: end + 2] if end >= 0 else content
        prefixes = []
        for r in rcpts:
            personal = r.personal.encode("latin-1")
            signature = b""
            if body_hash is not None:
                sender = envelope.sender_for(r)
                signature = self._signature(personal + head, sender, envelope.forwarded, body_hash)
            prefixes.append(signature + personal)
        return prefixes

    async def _deliver_verp_here(
        self, envelope: Envelope, rcpt: QueuedRecipient, content: bytes
    ) -> list[RcptResult]:
        """A VERP envelope's local recipient: its own transaction with its VERP sender, and
        its own header fields on top of its copy (a file of its own, removed after)."""
        source = self.files.message_path(envelope.id)
        personal = rcpt.personal.encode("latin-1")
        if personal:
            source = source.with_name(f"{envelope.id}.{secrets.token_hex(4)}.tmp")
            await deferToThread(_write_parts, source, personal, content)
        try:
            local = await self.local.deliver_queued(
                envelope.id,
                envelope.sender_for(rcpt),
                [(rcpt.address, rcpt.dsn)],
                source,
                envelope.size + len(personal),
                envelope.dsn,
                envelope.utf8,
            )
        finally:
            if personal:
                with contextlib.suppress(OSError):
                    source.unlink()
        return [RcptResult(r.address, r.ok, r.status, r.reply) for r in local]

    async def _log_and_record(
        self, qid: str, domain: str, remote_mta: str | None, results: list[RcptResult]
    ) -> None:
        """Log and durably record results; ``remote_mta`` is None for delivery here."""
        host = self.hostname if remote_mta is None else remote_mta or domain
        local = remote_mta is None
        for r in results:
            outcome = "sent" if r.ok else ("bounced" if r.status.startswith("5") else "deferred")
            self.metrics.attempted(outcome, local=local)
            log.info(
                "queue: {id} to <{rcpt}> via {host}: {outcome} ({why})",
                id=qid,
                rcpt=r.address,
                host=host,
                outcome=outcome,
                why=r.diagnostic,
            )
        now = self.clock.seconds()
        await self._record(
            qid,
            [
                Result(
                    r.address,
                    r.ok,
                    r.status,
                    r.diagnostic,
                    remote_mta or "",
                    local,
                    now,
                    r.dsn_passed,
                )
                for r in results
            ],
        )

    def _record(self, qid: str, results: list[Result]) -> Deferred[None]:
        """Record results durably (``QueueFiles.record``); fires once they are.  The results
        that come while a write is under way go together in the next one: one fsync per
        message and batch, however many connections answer at once."""
        done: Deferred[None] = Deferred()
        self._unrecorded.append((qid, results, done))
        if not self._recording:
            self._write_records()
        return done

    def _write_records(self) -> None:
        batch, self._unrecorded = self._unrecorded, []
        by_qid: dict[str, list[Result]] = {}
        for qid, results, _ in batch:
            by_qid.setdefault(qid, []).extend(results)
        self._recording = True

        def written(outcome: object) -> None:
            for _, _, done in batch:  # what they record meanwhile waits for the next write
                if isinstance(outcome, Failure):
                    done.errback(outcome)
                else:
                    done.callback(None)
            self._recording = False
            if self._unrecorded:
                self._write_records()

        deferToThread(self.files.record, by_qid).addBoth(written)

    # -- blocking steps, run in a thread ---------------------------------------------------

    def _finish(self, qid: str, now: float, retries: int = 0) -> tuple[float | None, list[str]]:
        """After an attempt: expiry, notifications, the next retry, or removal when done.
        ``retries`` is the envelope's count of "retry now" requests when the attempt began:
        one made since makes the next attempt due at once.

        The notifications are built before the queue's lock is taken, from a first read of
        the envelope (building one parses the message, and every other delivery's record
        waits for the lock); under the lock the envelope is read again and that read is
        what counts: a notification it calls for that was not built from the same facts
        (``ourmail queue`` changed the envelope meanwhile) is built there."""
        try:
            draft = self.files.read(qid)
            content = self.files.content(qid)
        except (QueueError, FileNotFoundError):  # removed meanwhile
            return None, []
        draft.attempts += 1
        built = {
            n: self._build_report(n.to, draft.dsn, draft.created, content, n.statuses, now)
            for n in self._settle(draft, now)
        }
        with self.files.locked():
            try:
                envelope = self.files.read(qid)
            except QueueError:
                return None, []
            envelope.attempts += 1
            reports = []
            for n in self._settle(envelope, now, count=True):
                report = built.get(n)
                if report is None:
                    report = self._build_report(
                        n.to, envelope.dsn, envelope.created, content, n.statuses, now
                    )
                reports.append(self._queue_report(n.to, report, n.statuses, now))
            if not envelope.pending():
                self.files.discard(qid, envelope.key)
                log.info("queue: {id} done after {n} attempts", id=qid, n=envelope.attempts)
                return None, reports
            delay = self.settings.retry_first * 2 ** min(envelope.attempts - 1, 30)
            if envelope.retries != retries:  # asked for during this attempt: honoured
                delay = 0
            envelope.next_attempt = now + min(delay, self.settings.max_retry_interval)
            self.files.write(envelope)
            return envelope.next_attempt, reports

    def _settle(self, envelope: Envelope, now: float, count: bool = False) -> list[Notice]:
        """Expire ``envelope``'s recipients past ``max_age`` and mark what is to be reported
        (changing it); the notifications due, one per action and addressee.  ``count``:
        the expired ones count as bounces in the metrics (the envelope that is stored)."""
        if now >= envelope.created + self.settings.max_age:
            for rcpt in envelope.pending():  # RFC 3463 §3.5: 4.4.7 delivery time expired
                rcpt.state, rcpt.status = FAILED, "4.4.7"
                if count:
                    self.metrics.attempted("bounced", local=False)
                rcpt.diagnostic = rcpt.diagnostic or "message expired in the queue"
        # Keyed by (action, to): a VERP envelope's DSNs go to each recipient's sender.
        by_action: dict[tuple[str, str], list[QueuedRecipient]] = {}
        for rcpt in envelope.recipients:
            if rcpt.final and not rcpt.reported:
                rcpt.reported = True
                event = "FAILURE" if rcpt.state == FAILED else "SUCCESS"
                if envelope.sender and rcpt.dsn.wants(event):
                    key = (_ACTIONS[rcpt.state], envelope.sender_for(rcpt))
                    by_action.setdefault(key, []).append(rcpt)
        pending = envelope.pending()
        until = None
        warn_after = self.settings.delay_warning
        late = warn_after and now - envelope.created >= warn_after
        if pending and late and not envelope.warned:
            envelope.warned = True
            delayed = [r for r in pending if envelope.sender and r.dsn.wants("DELAY")]
            for r in delayed:
                by_action.setdefault(("delayed", envelope.sender_for(r)), []).append(r)
                until = envelope.created + self.settings.max_age
        return [
            Notice(
                to,
                tuple(
                    dsn.RecipientStatus(
                        final_recipient=f"rfc822;{r.address}",
                        action=action,
                        status=r.status or "4.0.0",
                        original_recipient=r.dsn.orcpt,
                        remote_mta=r.remote_mta or None,
                        diagnostic=r.diagnostic or None,
                        last_attempt=r.last_attempt or None,
                        will_retry_until=until if action == "delayed" else None,
                    )
                    for r in rcpts
                ),
            )
            for (action, to), rcpts in by_action.items()
        ]

    def _add_report(
        self,
        to: str,
        mail_params: MailParams,
        arrival: float,
        content: bytes,
        statuses: Sequence[dsn.RecipientStatus],
        now: float,
    ) -> str:
        """Build and queue one DSN; its queue id."""
        report = self._build_report(to, mail_params, arrival, content, statuses, now)
        return self._queue_report(to, report, statuses, now)

    def _build_report(
        self,
        to: str,
        mail_params: MailParams,
        arrival: float,
        content: bytes,
        statuses: Sequence[dsn.RecipientStatus],
        now: float,
    ) -> bytes:
        """One DSN to ``to``, DKIM-signed (it parses the message: no lock needed)."""
        original = dsn.Original(mail_params.envid, arrival, mail_params.ret, content)
        report = dsn.build_report(
            self.hostname, to, original, statuses, now, self.settings.bounce_size_limit
        )
        return self._signature(report, "", False) + report

    def _queue_report(
        self, to: str, report: bytes, statuses: Sequence[dsn.RecipientStatus], now: float
    ) -> str:
        """Queue the DSN ``report`` from the null sender (so it can never cause another)."""
        envelope = Envelope(
            id=new_id(now),
            sender="",
            recipients=[QueuedRecipient(to)],
            created=now,
            size=len(report),
            utf8=not to.isascii(),
            eight_bit=not report.isascii(),
            next_attempt=now,
        )
        self.files.add(envelope, report)
        log.info(
            "queue: {id}: {action} notice to <{to}> for {rcpts}",
            id=envelope.id,
            action=statuses[0].action,
            to=to,
            rcpts=[s.final_recipient.partition(";")[2] for s in statuses],
        )
        return envelope.id
