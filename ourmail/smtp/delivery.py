"""Delivery: where an accepted message goes, written once for MX, submission, LMTP and the queue.

Implementation notes (keep these true when changing this module):

* Each recipient is looked up in the directory (a user, an alias or group, an address
  elsewhere, or unknown) and checked before the message is taken: an unknown address, a full
  mailbox or a relay attempt is refused with the RFC 3463 code the SMTP side sends
  (:class:`Refusal`); the queue turns the same refusal into a DSN.
* Every mailbox gets one copy, however many recipients (aliases, groups) lead to it.  Local
  copies go to ``IUserStore.deliver`` (durable before its Deferred fires: the group commit's
  ``syncfs``); addresses elsewhere go to the outbound queue in one durable enqueue, an
  alias's forwards in another, ARC-sealed first (RFC 8617 §5.1, ``IForwardSealer``) and
  marked forwarded (signed by the queue as their forwarder, not their author) unless a
  logged-in user sent the message.  All run at
  once, and the caller answers only after all are done.
* Results are per recipient (:class:`~ourmail.interfaces.DeliveryResult`), in RCPT order, so
  LMTP can answer each one (RFC 2033 §4.2) while SMTP answers all or nothing (RFC 5321 §4.2.5).
* With an :class:`~ourmail.interfaces.ISenderRewriter` (SRS, ``ourmail/srs.py``), an alias's
  forwards are queued with an SRS sender in the alias's domain (a second enqueue when other
  recipients keep the original sender), and an SRS address of a local domain resolves to a
  forward to the address it stands for; a forged or expired one is refused ``550 5.1.1``.
* A message that went durably into a user's INBOX (not Junk) with a non-null sender is told
  to the out-of-office responder (:class:`~ourmail.interfaces.IAutoResponder`) with its
  first :data:`RESPONDER_HEAD` octets; delivery neither waits for it nor fails with it.
* Every transaction is captured by the vault (:class:`~ourmail.interfaces.IVault`, wired by
  service.py) once, before its mailbox copies are stored and in the same reactor turn, so
  both join the same group commit; the queue gets the message only once the vault has it.
  A failed capture refuses every recipient (451 4.3.0): its batch placed no mailbox copy.
* An address of a mailing list (:class:`~ourmail.interfaces.IListIntake`, wired by
  service.py) resolves, after SRS and before the directory, to a ``list`` recipient (never a
  relay attempt); its refusal (the list's size limit) is the RCPT reply.  Its copy goes to
  ``IListIntake.accept`` once the vault has the message, beside the mailbox copies and the
  queue, and that recipient's result is 250 only once the list manager holds it durably.
* The outbound queue is reached only through :class:`~ourmail.interfaces.IOutboundQueue`, and
  the queue reaches this module only through :class:`~ourmail.interfaces.ILocalDelivery`:
  ``smtp/`` and ``queue/`` never import each other.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs
from twisted.internet import defer, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.dsnparams import MailParams, RcptParams
from ourmail.interfaces import (
    DeliveryResult,
    DirectoryUnavailable,
    ExpansionTooLarge,
    FolderExists,
    IAutoResponder,
    IDirectory,
    IForwardSealer,
    IListIntake,
    ILocalDelivery,
    IMailStore,
    InvalidSRS,
    IOutboundQueue,
    IQuotaPolicy,
    ISenderRewriter,
    IUserStore,
    IVault,
    ListArrival,
    Recipient,
    ShardMoving,
    VaultEnvelope,
)
from ourmail.net.metrics import Metrics

log = Logger()

#: What a store accepts as the message here: the bytes, or a file to hard-link or copy.
Source = bytes | Path
#: Octets of a delivered message the out-of-office responder reads (its header section).
RESPONDER_HEAD = 64 * 1024


@attrs.frozen
class Refusal:
    """Why a recipient is not taken: an SMTP reply (RFC 5321) with its RFC 3463 status."""

    code: int
    status: str
    text: str

    def result(self, address: str) -> DeliveryResult:
        return DeliveryResult(address, self.code, self.status, self.text)


#: RFC 3463 §3.5: X.4.3 directory server failure; the sender retries.
DIRECTORY_DOWN = Refusal(451, "4.4.3", "Directory unavailable, try again later")
UNKNOWN = Refusal(550, "5.1.1", "Recipient address rejected: User unknown")
#: RFC 3463 §3.3: X.2.4 mailing list expansion problem: a group too large is refused whole,
#: never taken with members left out.
TOO_LARGE = Refusal(550, "5.2.4", "Group or forward expands to too many addresses")
RELAY_DENIED = Refusal(554, "5.7.1", "Relay access denied")
NO_QUEUE = Refusal(550, "5.7.1", "Delivery to remote domains is not enabled here")
#: RFC 3463 §3.3: X.2.2 mailbox full; temporary unless configured permanent.
FULL = Refusal(552, "5.2.2", "Mailbox full")
FULL_FOR_NOW = Refusal(452, "4.2.2", "Mailbox full, try again later")
#: RFC 3463 §3.3: X.2.1 mailbox disabled (here: being moved to another volume), temporary.
MOVING = Refusal(451, "4.2.1", "mailbox temporarily unavailable, try later")
FAILED = Refusal(451, "4.3.0", "local delivery failed, try again later")
#: A forged or expired SRS address (a bounce that is not ours, or too late).
BAD_SRS = Refusal(550, "5.1.1", "Recipient address rejected: invalid or expired SRS address")
#: An SRS address is the way back for bounces: mail with a sender would make it a relay to
#: whoever it names, for as long as it is valid.
SRS_BOUNCES_ONLY = Refusal(550, "5.7.1", "SRS addresses take bounces only (MAIL FROM:<>)")


@attrs.frozen
class Accepted:
    """A recipient taken for a transaction, with its DSN parameters."""

    recipient: Recipient
    params: RcptParams


@attrs.frozen
class Transaction:
    """One message and its accepted recipients, ready to deliver."""

    id: str
    sender: str
    recipients: Sequence[Accepted]
    mail_params: MailParams
    utf8: bool
    size: int
    arrival: float = 0.0
    #: The filter chain said junk: local copies go to each user's Junk folder.
    junk: bool = False
    #: The chain said junk for these recipients only: a mailbox all of whose recipients
    #: are listed gets its copy in Junk.
    junk_recipients: frozenset[str] = frozenset()
    #: A logged-in user sent it (submission): an alias's forwards are the user's own mail,
    #: not forwarded mail (neither ARC-sealed nor signed as a forwarder).
    authenticated: bool = False
    #: How it came, for the vault: ``smtp`` (MX), ``lmtp``, ``submission``, ``webmail``,
    #: ``queue`` (VaultEnvelope.via).
    via: str = "smtp"
    #: The client's IP address ("" when there is none).
    client: str = ""
    #: The logged-in user who sent it ("" for mail from elsewhere).
    user: str = ""

    def envelope(self, mailboxes: Sequence[str]) -> VaultEnvelope:
        """What the vault keeps beside the message (docs/vault-format.md)."""
        return VaultEnvelope(
            via=self.via,
            sender=self.sender,
            recipients=tuple(a.recipient.address for a in self.recipients),
            mailboxes=tuple(mailboxes),
            client=self.client,
            user=self.user,
            id=self.id,
            arrival=self.arrival,
        )

    def junk_for(self, mailbox: str) -> bool:
        """Whether ``mailbox``'s copy goes to Junk: the chain said so for the message, or
        for every recipient whose mail reaches ``mailbox``."""
        if self.junk:
            return True
        leading = [a.recipient.address for a in self.recipients if mailbox in a.recipient.mailboxes]
        return bool(leading) and all(r in self.junk_recipients for r in leading)

    def group(self, a: Accepted, rewriter: ISenderRewriter | None) -> tuple[str, bool]:
        """The enqueue ``a``'s addresses elsewhere go in: by envelope sender (SRS for an
        alias's forwards) and whether they are forwards."""
        forwarded = a.recipient.kind == "alias"
        if rewriter is not None and forwarded and a.recipient.forwards:
            return rewriter.forward(self.sender, a.recipient.address.rpartition("@")[2]), True
        return self.sender, forwarded

    def outbound(
        self,
        rewriter: ISenderRewriter | None = None,
        keys: Sequence[tuple[str, bool]] | None = None,
    ) -> dict[tuple[str, bool], list[tuple[str, RcptParams]]]:
        """Addresses for the queue, by envelope sender and whether they are an alias's
        forwards; the forwards remember the alias (RFC 3461 §4.2) and, with a ``rewriter``,
        leave with an SRS sender in the alias's domain."""
        out: dict[tuple[str, bool], list[tuple[str, RcptParams]]] = {}
        if keys is None:
            keys = [self.group(a, rewriter) for a in self.recipients]
        for a, key in zip(self.recipients, keys, strict=True):
            for address in a.recipient.outbound:
                params = a.params
                if address != a.recipient.address and params.orcpt is None:
                    params = RcptParams(params.notify, f"rfc822;{a.recipient.address}")
                out.setdefault(key, []).append((address, params))
        return out


def special_folder(user: IUserStore, use: str, default: str) -> str:
    """The user's folder of an RFC 6154 special ``use`` (``\\Junk``, ``\\Sent``), made as
    ``default`` when the user has none yet."""
    named = [name for name, found in user.special_uses().items() if found == use]
    if named:
        return named[0]
    with contextlib.suppress(FolderExists):  # made meanwhile, or there without the attribute
        user.create_folder(default, use)
    return default


def junk_folder(user: IUserStore) -> str:
    """The user's folder for junk (RFC 6154 ``\\Junk``), made when the user has none yet."""
    return special_folder(user, "\\Junk", "Junk")


@implementer(ILocalDelivery)
class Delivery:
    """Recipient checks and fan-out to the store and the outbound queue."""

    def __init__(
        self,
        directory: IDirectory,
        store: IMailStore,
        quota: IQuotaPolicy,
        queue: IOutboundQueue | None = None,
        rewriter: ISenderRewriter | None = None,
    ) -> None:
        self.directory = directory
        self.store = store
        self.quota = quota
        #: Where mail for other domains goes; None: nowhere (refused).
        self.queue = queue
        #: ARC sealing of an alias's forwards (wired by service.py); None: forwarded as is.
        self.sealer: IForwardSealer | None = None
        #: SRS for forwarded mail, and the way back for bounces to SRS addresses.
        self.rewriter = rewriter
        #: The out-of-office replies (wired by service.py); None: none are sent.
        self.responder: IAutoResponder | None = None
        #: Counts local copies and the store's delivery latency (wired by service.py).
        self.metrics = Metrics()
        #: Runs many short steps (a group's quota checks, one member each) between the
        #: reactor's other work: the reactor is never held for more than a step or two.
        self.stepwise: Callable[[Iterator[None]], Deferred[object]] = _cooperate
        #: Where every transaction is kept (wired by service.py); None: not kept.
        self.vault: IVault | None = None
        #: The mailing lists' intake (wired by service.py); None: no list addresses here.
        self.lists: IListIntake | None = None

    # -- recipients --------------------------------------------------------------------------

    def resolve(
        self, address: str, size: int, may_relay: bool, sender: str | None = None
    ) -> Deferred[Recipient | Refusal]:
        """Look ``address`` up and check it for a message of ``size`` bytes (0: not known)
        from ``sender`` ("" for a bounce; None: not known)."""

        def unavailable(failure: Failure) -> Refusal:
            if failure.check(ExpansionTooLarge):
                log.warn("refused <{address}>: {why}", address=address, why=str(failure.value))
                return TOO_LARGE
            failure.trap(DirectoryUnavailable)
            return DIRECTORY_DOWN

        srs = self._reverse_srs(address)
        if isinstance(srs, Recipient):
            if sender:
                return defer.succeed(SRS_BOUNCES_ONLY)
            return defer.succeed(self.check(srs, size, may_relay) or srs)
        if srs is not None:
            return defer.succeed(srs)
        listed = self._list_recipient(address, size)
        if listed is not None:
            return defer.succeed(listed)
        d = self.directory.lookup(address)
        d.addCallbacks(lambda rcpt: self.check(rcpt, size, may_relay) or rcpt, unavailable)
        return d  # type: ignore[return-value]

    def check(self, rcpt: Recipient, size: int, may_relay: bool) -> Refusal | None:
        """Why ``rcpt`` cannot take a message of ``size`` bytes, or None if it can."""
        if rcpt.kind == "list":  # handled here by the list manager: never a relay
            return None
        if rcpt.outbound and self.queue is None:
            return NO_QUEUE
        if _checked_at_rcpt(rcpt):
            if self.quota.fits(self.store.user(rcpt.mailboxes[0]), size):
                return None
            return FULL if self.quota.permanent else FULL_FOR_NOW
        if rcpt.kind == "alias":
            # A group or forward of many destinations: each mailbox is checked when the
            # message is delivered (:meth:`_full_mailboxes`, in a thread), not here.
            return None
        if rcpt.kind == "unknown":
            return UNKNOWN
        return None if may_relay else RELAY_DENIED

    def _list_recipient(self, address: str, size: int) -> Recipient | Refusal | None:
        """One of a mailing list's addresses (with the list's refusal of a message of ``size``
        octets, if any); None for other addresses or when no list intake is wired."""
        if self.lists is None or not self.lists.handles(address.lower()):
            return None
        reply = self.lists.refusal(address.lower(), size)
        if reply is not None:
            return refusal_of(reply)
        return Recipient("list", address.lower())  # one arrival however RCPT spelled it

    def _reverse_srs(self, address: str) -> Recipient | Refusal | None:
        """An SRS address in a local domain: a forward to the address it stands for (the
        original sender, or the first forwarder's SRS0 address); None for other addresses."""
        if self.rewriter is None or not self.directory.is_local_domain(_domain(address)):
            return None
        target = address
        for _ in range(2):  # SRS1 -> SRS0 at the first forwarder, which may be here too
            try:
                back = self.rewriter.reverse(target)
            except InvalidSRS as e:
                log.info("refused SRS address <{address}>: {why}", address=address, why=str(e))
                return BAD_SRS
            if back is None:
                break
            target = back
            if not self.directory.is_local_domain(_domain(target)):
                break
        if target == address:
            return None
        if self.directory.is_local_domain(_domain(target)):
            return BAD_SRS  # we never rewrite a local sender: not one of ours
        return Recipient("alias", address, forwards=(target,))

    # -- fan-out -----------------------------------------------------------------------------

    @inlineCallbacks
    def deliver(self, txn: Transaction, source: Source) -> Deferred[list[DeliveryResult]]:
        """Deliver to every accepted recipient; one result each, in order.  Each Deferred it
        waits for fires only once its copy is durable."""
        too_big = self._list_refusal(txn)
        if too_big is not None:
            # Refused whole, before anything is stored: SMTP answers DATA once for all
            # recipients (RFC 5321 §4.2.5), and one clear 552 beats half a delivery.
            log.info("{id}: refused, {why}", id=txn.id, why=too_big.text)
            return [too_big.result(a.recipient.address) for a in txn.recipients]
        # Each mailbox gets one copy, however many recipients (aliases) lead to it.
        started = self.metrics.clock()
        mailboxes = list(dict.fromkeys(m for a in txn.recipients for m in a.recipient.mailboxes))
        full = yield self._full_mailboxes(txn, mailboxes)
        if full:
            log.info(
                "{id}: mailboxes {full} are full, skipped for the groups or forwards that "
                "lead to them",
                id=txn.id,
                full=sorted(full),
            )
            mailboxes = [m for m in mailboxes if m not in full]
        keys = [txn.group(a, self.rewriter) for a in txn.recipients]
        outbound = txn.outbound(self.rewriter, keys)
        # Same reactor turn: the capture and the copies join one group commit, capture first.
        captured = self._capture(txn, source, mailboxes)
        jobs = [self._store_copy(m, source, txn.junk_for(m)) for m in mailboxes]
        head = self._head(txn, source) if mailboxes else None
        if not (yield captured):
            yield defer.DeferredList(jobs, consumeErrors=True)  # they failed with the batch
            return [FAILED.result(a.recipient.address) for a in txn.recipients]
        for (sender, forwarded), rcpts in outbound.items():
            assert self.queue is not None
            if forwarded and not txn.authenticated:  # a user's own mail is not sealed
                jobs.append(self._forward(txn, sender, rcpts, source))
            else:
                jobs.append(self.queue.enqueue(sender, rcpts, source, txn.mail_params, txn.utf8))
        # One arrival per list address, however often RCPT named it.
        listed = list(
            dict.fromkeys(a.recipient.address for a in txn.recipients if a.recipient.kind == "list")
        )
        jobs.extend(self._to_list(txn, address, source) for address in listed)
        outcomes = yield defer.DeferredList(jobs, consumeErrors=True)
        for ok, outcome in outcomes:
            if not ok:
                log.failure("delivery of {id} failed", outcome, id=txn.id)
        stored = dict(zip(mailboxes, outcomes, strict=False))
        queued = dict(
            zip(outbound, outcomes[len(mailboxes) : len(outcomes) - len(listed)], strict=True)
        )
        taken = dict(zip(listed, outcomes[len(outcomes) - len(listed) :], strict=True))
        delivered = [m for m, (ok, _) in stored.items() if ok]
        if delivered:
            self.metrics.stored(started)
            self.metrics.delivered("local", len(delivered))
            log.info(
                "delivered {id} from <{sender}> to {rcpts} ({size} bytes)",
                id=txn.id,
                sender=txn.sender,
                rcpts=delivered,
                size=txn.size,
            )
            if head is not None:
                inbox = [m for m in delivered if not txn.junk_for(m)]
                self._respond(txn.sender, inbox, (yield head))
        results = []
        for a, key in zip(txn.recipients, keys, strict=True):
            address = a.recipient.address
            if (
                a.recipient.mailboxes
                and not a.recipient.outbound
                and full.issuperset(a.recipient.mailboxes)
            ):
                # None of its destinations could take it: refused, not lost (RFC 3463 X.2.2).
                results.append((FULL if self.quota.permanent else FULL_FOR_NOW).result(address))
                continue
            tried = [stored[m] for m in a.recipient.mailboxes if m in stored]
            failed = [outcome for ok, outcome in tried if not ok]
            went = queued.get(key, (True, None))
            if not failed and a.recipient.outbound and not went[0]:
                failed = [went[1]]  # this recipient's enqueue failed, not another's
            if a.recipient.kind == "list" and not taken[address][0]:
                failed = [taken[address][1]]
            if not failed:
                results.append(DeliveryResult(address, 250, "2.0.0", "delivered"))
            else:
                refusal = MOVING if failed[0].check(ShardMoving) else FAILED
                results.append(refusal.result(address))
        return results

    def _list_refusal(self, txn: Transaction) -> Refusal | None:
        """A list's refusal of this message's real size (the client may not have announced
        it with SIZE at MAIL FROM, RFC 1870), or None."""
        if self.lists is None:
            return None
        for a in txn.recipients:
            if a.recipient.kind == "list":
                reply = self.lists.refusal(a.recipient.address, txn.size)
                if reply is not None:
                    return refusal_of(reply)
        return None

    def _to_list(self, txn: Transaction, address: str, source: Source) -> Deferred[None]:
        """Hand the copy for the list address ``address`` to the list manager; fires once it
        holds it durably."""
        assert self.lists is not None
        arrival = ListArrival(
            address, txn.sender, txn.client, txn.user, txn.id, txn.arrival, txn.size
        )
        return defer.maybeDeferred(self.lists.accept, arrival, source)

    def _capture(self, txn: Transaction, source: Source, mailboxes: list[str]) -> Deferred[bool]:
        """Keep the message in the vault: True once it is durable there (or there is no
        vault), False when it could not be kept (logged)."""
        if self.vault is None:
            return defer.succeed(True)

        def lost(failure: Failure) -> bool:
            log.failure("the vault could not keep {id}", failure, id=txn.id)
            return False

        d = defer.maybeDeferred(self.vault.capture, source, txn.envelope(mailboxes))
        return d.addCallbacks(lambda _: True, lost)

    def _forward(
        self, txn: Transaction, sender: str, forwards: list[tuple[str, RcptParams]], source: Source
    ) -> Deferred[str]:
        """Queue an alias's forwards, ARC-sealed when a sealer is wired; a sealing failure
        forwards the message unsealed (logged): nothing acknowledged is lost."""
        assert self.queue is not None
        queue = self.queue
        if self.sealer is None:
            sealed: Deferred[bytes | Path] = defer.succeed(source)
        else:
            sealed = self.sealer.seal(source)  # type: ignore[assignment]

            def unsealed(failure: Failure) -> Source:
                log.failure("ARC sealing of {id} failed: forwarded unsealed", failure, id=txn.id)
                return source

            sealed.addErrback(unsealed)
        return sealed.addCallback(
            lambda content: queue.enqueue(
                sender, forwards, content, txn.mail_params, txn.utf8, forwarded=True
            )
        )

    def _full_mailboxes(self, txn: Transaction, mailboxes: list[str]) -> Deferred[set[str]]:
        """The mailboxes, reached only through a group or forward of many destinations, that
        cannot take the message: checked one member at a time between the reactor's other
        work (:attr:`stepwise`: a big group's usage reads many folders; the store's objects
        are the reactor thread's, so not in a thread).  A mailbox full for one member's copy
        is skipped (logged), the others still get theirs, as Dovecot's LDA does for an
        alias's targets."""
        checked = {
            a.recipient.mailboxes[0] for a in txn.recipients if _checked_at_rcpt(a.recipient)
        }
        unchecked = [m for m in mailboxes if m not in checked]
        full: set[str] = set()
        if not unchecked:
            return defer.succeed(full)

        def each() -> Iterator[None]:
            for m in unchecked:
                if not self.quota.fits(self.store.user(m), txn.size):
                    full.add(m)
                yield None

        return self.stepwise(each()).addCallback(lambda _: full)

    def _head(self, txn: Transaction, source: Source) -> Deferred[bytes] | None:
        """The first octets of the message for the responder (None: no responder, or a null
        sender), read in a thread from a spool file while the copies are stored."""
        if self.responder is None or not txn.sender:
            return None
        if not isinstance(source, Path):
            return defer.succeed(bytes(source[:RESPONDER_HEAD]))

        def read() -> bytes:
            with open(source, "rb") as f:
                return f.read(RESPONDER_HEAD)

        def unread(failure: Failure) -> bytes:
            log.failure("could not read {path} for the responder", failure, path=source)
            return b""

        return deferToThread(read).addErrback(unread)

    def _respond(self, sender: str, mailboxes: list[str], head: bytes) -> None:
        """Tell the responder of each INBOX copy; it handles (and logs) its own errors."""
        if not head or self.responder is None:
            return
        for mailbox in mailboxes:
            try:
                self.responder.delivered(mailbox, sender, head)
            except Exception:
                log.failure("the responder failed for {mailbox}", mailbox=mailbox)

    def _store_copy(self, mailbox: str, source: Source, junk: bool) -> Deferred[int]:
        user = self.store.user(mailbox)
        if not junk:
            return user.deliver(source)
        try:
            return user.deliver(source, junk_folder(user))
        except Exception:
            return defer.fail()

    def report_success(self, txn: Transaction, source: Source) -> Deferred[object]:
        """RFC 3461 §5.2.2: a "delivered" report for final delivery here, when asked (the
        queue skips a null sender and recipients who did not ask)."""
        if self.queue is None:
            return defer.succeed(None)
        here = [
            (a.recipient.address, a.params)
            for a in txn.recipients
            if a.recipient.mailboxes and not a.recipient.outbound
        ]
        return self.queue.report_delivered(txn.sender, txn.mail_params, txn.arrival, source, here)

    # -- the queue's way in ------------------------------------------------------------------

    @inlineCallbacks
    def deliver_queued(
        self,
        qid: str,
        sender: str,
        recipients: Sequence[tuple[str, RcptParams]],
        source: Path,
        size: int,
        mail_params: MailParams,
        utf8: bool,
    ) -> Deferred[list[DeliveryResult]]:
        """Recipients in a local domain (a bounce to a local sender, say) that waited in the
        queue: checked and delivered as if they came by SMTP; an alias's forwards are queued
        again as new messages."""
        found = yield defer.gatherResults(
            [self.resolve(address, size, True, sender) for address, _ in recipients]
        )
        accepted = [
            Accepted(rcpt, params)
            for (_, params), rcpt in zip(recipients, found, strict=True)
            if isinstance(rcpt, Recipient)
        ]
        txn = Transaction(qid, sender, accepted, mail_params, utf8, size, time.time(), via="queue")
        delivered = iter((yield self.deliver(txn, source)) if accepted else [])
        # Results name the addresses as queued (the directory may spell them otherwise).
        return [
            rcpt.result(address)
            if isinstance(rcpt, Refusal)
            else attrs.evolve(next(delivered), address=address)
            for (address, _), rcpt in zip(recipients, found, strict=True)
        ]


#: An SMTP reply (RFC 5321 §4.2) with an RFC 3463 enhanced status code.
_REPLY = re.compile(r"([45]\d\d)[ -](?:([45]\.\d{1,3}\.\d{1,3})(?: |$))?(.*)")


def refusal_of(reply: str) -> Refusal:
    """The :class:`Refusal` an SMTP reply string (``552 5.3.4 Message too big``) stands for,
    on one line; one that is not a 4xx or 5xx reply refuses with ``550 5.0.0``, and a status
    of another class than the code is replaced by the code's own (RFC 3463 §2)."""
    line = " ".join(reply.split())  # no CR or LF may reach the SMTP reply
    found = _REPLY.fullmatch(line)
    if found is None:
        return Refusal(550, "5.0.0", line or "Recipient refused")
    code, status, text = found.groups()
    if status is None or status[0] != code[0]:
        status = f"{code[0]}.0.0"
    return Refusal(int(code), status, text or "Recipient refused")


def _cooperate(steps: Iterator[None]) -> Deferred[object]:
    """Run ``steps`` on the reactor's cooperator (a few at each turn of the reactor)."""
    return task.cooperate(steps).whenDone()


def _checked_at_rcpt(rcpt: Recipient) -> bool:
    """Whether ``rcpt``'s quota is checked at RCPT: one mailbox and nowhere else to go (a
    user, or an alias of one user).  A group's or a forward's many destinations are checked
    at delivery, so a big group costs no folder reads on the reactor at each RCPT and one
    full mailbox does not refuse the mail for the others."""
    return rcpt.kind in ("user", "alias") and len(rcpt.mailboxes) == 1 and not rcpt.outbound


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()
