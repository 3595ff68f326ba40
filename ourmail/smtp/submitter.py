"""Submission without an SMTP session (``ISubmission``): the webmail sends through the very
steps the submission listeners take, so a message a user writes in the browser is treated as
one their mail client submits (RFC 6409).

Implementation notes (keep these true when changing this module):

* The steps are the SMTP session's own functions, not copies: the sender check and the
  ``From:``/``Message-ID:``/``Date:`` rules (``submission.py``), the filter chain's stages
  and header rewrite (``checks.py``), recipient checks and the fan-out to the store and the
  outbound queue, where DKIM signs at enqueue (``delivery.py``), and what follows a sent
  message: the sending rates, the ``\\Sent`` copy and the contacts book
  (``submission.after_submission``).  The rates object is the submission listeners' own, so
  the hourly limits count mail from both ways.
* All or nothing: a refused sender, rate, size, recipient or content refuses the message
  before anything is delivered; the result names each refused recipient.
* Nothing acknowledged is lost: :meth:`Submitter.submit` fires with a result without
  refusals only after every copy is durable (the store's group commit, the queue's files).
* Memory is bounded: a message given as a file is copied into the spool in a thread (the
  spool keeps at most its first MiB in memory), and the header rewrite of a large one runs
  in a thread too.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.addresses import AddressError, normalise_address
from ourmail.config import Limits
from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.fsutil import HAVE_SYNCFS
from ourmail.interfaces import (
    ChainOutcome,
    DeliveryResult,
    IContactBook,
    IDirectory,
    IFilterChain,
    IMailStore,
    ISubmission,
    MailContext,
    RefusalReason,
    Stage,
    SubmissionRefusal,
    SubmissionResult,
)
from ourmail.smtp import submission, syntax
from ourmail.smtp.checks import (
    HEADER_SCAN,
    added_fields,
    header_too_large,
    rewrite_header,
    run_stage,
)
from ourmail.smtp.delivery import Accepted, Delivery, Refusal, Transaction, special_folder
from ourmail.smtp.spool import Spool
from ourmail.smtp.submission import SendingRates

log = Logger()

#: Bytes copied at a time from a message file into the spool.
COPY_CHUNK = 1 << 16


def _refused(
    reason: RefusalReason, code: int, status: str, text: str, address: str | None = None
) -> SubmissionResult:
    return SubmissionResult((SubmissionRefusal(address, reason, code, status, text),))


@implementer(ISubmission)
class Submitter:
    """The submission rules for a user who is logged in some other way than SMTP AUTH."""

    def __init__(
        self,
        hostname: str,
        limits: Limits,
        directory: IDirectory,
        store: IMailStore,
        delivery: Delivery,
        spool_dir: Path,
        rates: SendingRates | None = None,
        checks: IFilterChain | None = None,
        check_mail: bool = False,
        contacts: IContactBook | None = None,
    ) -> None:
        self.hostname = hostname
        self.limits = limits
        self.directory = directory
        self.store = store
        self.delivery = delivery
        self.spool_dir = spool_dir
        #: The submission listeners' hourly limits (one object: shared counts).
        self.rates = rates
        self.checks = checks
        #: Whether every check runs (``[filters] check_submission``), not only trusted ones.
        self.check_mail = check_mail
        self.contacts = contacts

    def submit(
        self,
        user: str,
        sender: str,
        recipients: Sequence[str],
        message: bytes | os.PathLike[str],
        client: str = "",
    ) -> Deferred[SubmissionResult]:
        """See :meth:`ISubmission.submit`."""
        return Deferred.fromCoroutine(self._submit(user, sender, list(recipients), message, client))

    async def _submit(
        self,
        user: str,
        sender: str,
        recipients: list[str],
        message: bytes | os.PathLike[str],
        client: str,
    ) -> SubmissionResult:
        # RFC 6409 §6.1: the envelope sender is the user's own address or alias.
        if not submission.may_send_as(self.directory, user, sender):
            return _refused("sender", 553, "5.7.1", f"<{sender}>: Sender address not owned")
        if not recipients:
            return _refused("recipient", 554, "5.5.1", "No valid recipients")
        if len(recipients) > self.limits.max_recipients:
            return _refused("recipient", 452, "4.5.3", "Too many recipients")
        reserved = self.rates.reserve(user, len(recipients)) if self.rates is not None else None
        if self.rates is not None and reserved is None:
            return _refused("rate", 451, "4.7.1", "Hourly sending limit reached, try later")
        queue_id = secrets.token_hex(8)
        spool = Spool(self.spool_dir, queue_id)
        result: SubmissionResult | None = None
        try:
            if isinstance(message, bytes):
                spool.write(message)
            else:
                await deferToThread(_copy_into, Path(message), spool)
            result = await self._checked_and_sent(user, sender, recipients, spool, client, queue_id)
        finally:
            spool.discard()
            went_out = result is not None and (result.sent or bool(result.delivered))
            if self.rates is not None and reserved is not None and not went_out:
                self.rates.release(user, reserved)
        return result

    async def _checked_and_sent(
        self,
        user: str,
        sender: str,
        recipients: list[str],
        spool: Spool,
        client: str,
        queue_id: str,
    ) -> SubmissionResult:
        if spool.size > self.limits.max_message_size:  # RFC 1870 §6.1
            return _refused("size", 552, "5.3.4", "Message size exceeds fixed maximum")

        def owned(address: str) -> bool:
            return submission.may_send_as(self.directory, user, address)

        if not submission.complete_header(spool, 0, self.hostname, owned):
            return _refused("sender", 553, "5.7.1", "From: must be your own address or alias")
        context = MailContext(
            client_address=client or "127.0.0.1",
            listener="web",
            helo=self.hostname,
            authenticated=user,
            trusted=not self.check_mail,
        )
        verdicts = ChainOutcome()
        for stage in ("connect", "mail"):
            if stage == "mail":
                context.sender = sender
            refusal = await self._stage(stage, context, verdicts)
            if refusal is not None:
                return refusal
        accepted: list[Accepted] = []
        refusals: list[SubmissionRefusal] = []
        for address in recipients:
            found = await self._recipient(address, sender, spool.size, context, verdicts)
            if isinstance(found, SubmissionRefusal):
                refusals.append(found)
            elif all(a.recipient.address != found.recipient.address for a in accepted):
                accepted.append(found)
                context.recipients.append(found.recipient.address)
                context.mailboxes[found.recipient.address] = found.recipient.mailboxes
        if refusals:
            return SubmissionResult(tuple(refusals))
        # A group's or forward's addresses elsewhere each count towards the hourly limit
        # (the send reserved one per recipient): else one recipient is an amplifier.
        extra = sum(submission.rate_weight(a.recipient) for a in accepted) - len(accepted)
        more = self.rates.reserve(user, extra) if self.rates is not None and extra > 0 else None
        if self.rates is not None and extra > 0 and more is None:
            return _refused("rate", 451, "4.7.1", "Hourly sending limit reached, try later")
        result: SubmissionResult | None = None
        try:
            result = await self._sent(
                user, sender, recipients, spool, context, verdicts, accepted, queue_id
            )
        finally:
            went_out = result is not None and (result.sent or bool(result.delivered))
            if self.rates is not None and more is not None and not went_out:
                self.rates.release(user, more)
        return result

    async def _sent(
        self,
        user: str,
        sender: str,
        recipients: list[str],
        spool: Spool,
        context: MailContext,
        verdicts: ChainOutcome,
        accepted: list[Accepted],
        queue_id: str,
    ) -> SubmissionResult:
        """The end of data checks, then the delivery of a message whose recipients passed."""
        refusal = await self._data(spool, context, verdicts)
        if refusal is not None:
            return refusal
        head = spool.head(HEADER_SCAN)
        end = head.find(b"\r\n\r\n")
        utf8 = not (sender + "".join(recipients)).isascii() or not head[: max(end, 0)].isascii()
        txn = Transaction(
            id=queue_id,
            sender=sender,
            recipients=accepted,
            mail_params=NO_MAIL_PARAMS,
            utf8=utf8,
            size=spool.size,
            arrival=time.time(),
            junk=bool(verdicts.junk),
            junk_recipients=frozenset(verdicts.junk_recipients),
            authenticated=True,
            via="webmail",
            user=user,
        )
        source = spool.source()
        on_disk = spool.on_disk()
        if on_disk is not None and not HAVE_SYNCFS:  # else the commit's syncfs covers it
            await deferToThread(os.fsync, on_disk.fileno())
        results: list[DeliveryResult] = await self.delivery.deliver(txn, source)
        failures = tuple(
            SubmissionRefusal(r.address, "failed", r.code, r.status, r.text)
            for r in results
            if not r.ok
        )
        delivered = tuple(r.address for r in results if r.ok)
        if not delivered:
            return SubmissionResult(failures)
        self.delivery.metrics.accepted("web")
        log.info("{user} sent {id} from the web to {n} of {total} recipients", user=user,
                 id=queue_id, n=len(delivered), total=len(results))  # fmt: skip
        # What follows a durable delivery must not turn it into a failure the user would
        # answer by sending again: each step logs its own failure.
        try:
            sent: str | None = special_folder(self.store.user(user), "\\Sent", "Sent")
        except Exception:
            log.failure("no Sent folder for {user}", user=user)
            sent = None
        # The rate was counted when the send began (reserve): rates=None here.
        await submission.after_submission(
            user, source, list(delivered), None, self.store, sent, self.contacts
        )
        return SubmissionResult(failures, _message_id(head), delivered)

    def _stage(
        self, stage: Stage, context: MailContext, verdicts: ChainOutcome
    ) -> Deferred[SubmissionResult | None]:
        """The chain at ``stage`` where it runs on this mail: a refusal, or None."""
        checks = self.checks
        if checks is None or not checks.runs_at(stage, context.trusted):
            return succeed(None)
        d = run_stage(checks, stage, context, verdicts)
        return d.addCallback(lambda outcome: None if outcome is None else _content(outcome))

    async def _recipient(
        self, address: str, sender: str, size: int, context: MailContext, verdicts: ChainOutcome
    ) -> Accepted | SubmissionRefusal:
        """One recipient checked as RCPT TO would be (RFC 5321 §4.1.1.3)."""
        try:
            normal = normalise_address(address, max_local=syntax.MAX_PATH)
        except AddressError:
            return SubmissionRefusal(address, "recipient", 550, "5.1.3", "Bad address syntax")
        found = await self.delivery.resolve(normal, size, True, sender)
        if isinstance(found, Refusal):
            return SubmissionRefusal(address, "recipient", found.code, found.status, found.text)
        context.recipient = found.address
        refusal = await self._stage("rcpt", context, verdicts)
        context.recipient = None
        if refusal is not None:
            return _for_recipient(refusal.refusals[0], address)
        return Accepted(found, NO_RCPT_PARAMS)

    async def _data(
        self, spool: Spool, context: MailContext, verdicts: ChainOutcome
    ) -> SubmissionResult | None:
        """The end-of-data checks and the header rewrite, as the SMTP session does them."""
        checks = self.checks
        if checks is None:
            return None
        head = spool.head(HEADER_SCAN)
        if header_too_large(spool, head):
            return _refused("size", 552, "5.3.4", "Message header too large")
        if checks.runs_at("data", context.trusted):
            context.content = spool.source()
            refusal = await self._stage("data", context, verdicts)
            if refusal is not None:
                return refusal
        fields = added_fields(checks, context, verdicts)
        if spool.on_disk() is None:
            rewrite_header(spool, checks, fields, 0, head)
        else:  # a large message: its file is rewritten off the reactor
            await deferToThread(rewrite_header, spool, checks, fields, 0, head)
        return None


def _content(outcome: ChainOutcome) -> SubmissionResult:
    verdict = outcome.refusal
    assert verdict is not None
    return _refused("content", verdict.code, verdict.status, verdict.text)


def _for_recipient(refusal: SubmissionRefusal, address: str) -> SubmissionRefusal:
    """The chain's refusal of one recipient, ``address``."""
    return SubmissionRefusal(address, "recipient", refusal.code, refusal.status, refusal.text)


def _copy_into(path: Path, spool: Spool) -> None:
    """Copy a message file into the spool in chunks (in a thread)."""
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            spool.write(chunk)


def _message_id(head: bytes) -> str:
    """The ``Message-ID:`` field's value in a header section, or ""."""
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"message-id":
            return value.strip().decode("ascii", "replace")
    return ""
