"""One ordered chain of checks, run at connect, MAIL, RCPT and the end of DATA/BDAT.

Implementation notes (keep these true when changing this module):

* Checks run one after another in the configured order (DMARC reads what SPF and DKIM found),
  each with its own time-out.  The first refusal stops the stage; ``junk`` verdicts and added
  header fields accumulate.
* A check that fails (an exception) or does not answer in time is answered by its own
  ``on_error`` policy: ``accept`` (carry on) or ``tempfail`` (451 4.7.0, so the sender tries
  again later); either way the outcome is logged with the check's name.  Mail is never lost
  to a broken check: it is accepted or refused while the client is still connected.
* Every verdict's results go into one ``Authentication-Results:`` header (RFC 8601) with this
  host's authserv-id; the chain never sees a client's own claims under that id
  (:mod:`ourmail.filters.authresults` removes them first).  Likewise a check that writes
  header fields of its own may name them in an optional ``replaces_fields`` attribute (the
  spam check: ``X-Spam-Status`` and the like): fields of those names that arrive with the
  message are removed first, on every listener.
* A ``junk`` verdict that names ``recipients`` files only their copies into Junk
  (:attr:`ChainOutcome.junk_recipients`); one without files every copy.  The shared
  ``X-Ourmail-Junk`` field holds only a verdict's ``reason``; a verdict's per-recipient
  ``reasons`` go to that recipient's filter-log entry alone (:data:`JUNK_REASONS`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import attrs
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.filters import authresults
from ourmail.filters.filterlog import message_id
from ourmail.interfaces import (
    ChainOutcome,
    FilterEvent,
    ICheck,
    IFilterChain,
    IFilterLog,
    MailContext,
    Stage,
    Verdict,
    refuse,
)
from ourmail.net.metrics import Metrics

log = Logger()

#: RFC 3463 §3.8: X.7.0 other security or policy status; the client retries.
CHECK_FAILED = refuse(451, "4.7.0", "Temporary failure in a mail check, try again later")


@implementer(IFilterChain)
class FilterChain:
    """The checks of one server, in order."""

    def __init__(
        self,
        checks: Sequence[ICheck],
        clock: IReactorTime,
        authserv_id: str,
        log: IFilterLog | None = None,
    ) -> None:
        """``log`` records refusals and Junk filings per recipient (``ourmail log filter``)."""
        self.checks = tuple(checks)
        self._clock = clock
        self.authserv_id = authserv_id
        self.log = log
        #: Counts each check's verdicts (wired by service.py).
        self.metrics = Metrics()

    def strip(self, head: bytes) -> bytes:
        names = [n for c in self.checks for n in getattr(c, "replaces_fields", ())]
        return authresults.strip_named(authresults.strip_own(head, self.authserv_id), names)

    def fields(self, context: MailContext, outcome: ChainOutcome) -> bytes:
        added = authresults.header(self.authserv_id, context.results)
        added += b"".join(authresults.field(n, v) for n, v in outcome.headers)
        if outcome.junk:
            added += authresults.field("X-Ourmail-Junk", "; ".join(outcome.junk))
        return added

    def filed(
        self, context: MailContext, outcome: ChainOutcome, mailboxes: Mapping[str, Sequence[str]]
    ) -> None:
        if self.log is None:
            return
        by_recipient = context.notes.get(JUNK_REASONS, {})
        assert isinstance(by_recipient, dict)
        events = []
        for mailbox, recipients in mailboxes.items():
            # A check's reason kept under the mailbox's user (the spam check's, for an
            # alias's users) is that user's own, and replaces the check's reasons for the
            # recipients leading there.
            by_user = list(by_recipient.get(mailbox, ()))
            user_checks = {why.partition(":")[0] for why in by_user}
            via = [
                why
                for r in recipients
                for why in by_recipient.get(r, ())
                if why.partition(":")[0] not in user_checks
            ]
            own = [*by_user, *via]
            # A check's reason for this recipient replaces its shared one.
            mine = {why.partition(":")[0] for why in own}
            shared = [why for why in outcome.junk if why.partition(":")[0] not in mine]
            reasons = list(dict.fromkeys([*shared, *own]))
            checks = ", ".join(dict.fromkeys(why.partition(":")[0] for why in reasons))
            events.append(_event(context, "junk", "data", checks, "; ".join(reasons), mailbox))
        self.log.record(events)

    def runs_at(self, stage: Stage, trusted: bool = False) -> bool:
        """Whether any check runs at ``stage`` (on mail the listener trusts, if ``trusted``)."""
        return any(stage in c.stages and (c.trusted or not trusted) for c in self.checks)

    def run(self, stage: Stage, context: MailContext) -> Deferred[ChainOutcome]:
        """Run every check that runs at ``stage``; their results join ``context.results``."""
        return Deferred.fromCoroutine(self._run(stage, context))

    async def _run(self, stage: Stage, context: MailContext) -> ChainOutcome:
        outcome = ChainOutcome()
        if stage == "data" and self.log is not None:
            context.notes[MESSAGE_ID] = await _message_id(context)
        for check in self.checks:
            if stage not in check.stages or (context.trusted and not check.trusted):
                continue
            verdict = await self._one(check, stage, context)
            self.metrics.verdict(check.name, verdict.action)
            if not (verdict.refuses and stage == "rcpt"):
                # (A refusal at RCPT is this recipient's: it says nothing of the message.)
                context.results.extend(verdict.results)
                outcome.headers.extend(verdict.headers)
            if verdict.refuses:
                log.info(
                    "{check} refused {peer} at {stage}: {reply}",
                    check=check.name,
                    peer=context.client_address,
                    stage=stage,
                    reply=verdict.reply,
                )
                outcome.refusal = verdict
                self._record_refusal(check, stage, context, verdict)
                return outcome
            if verdict.action == "junk":
                self._junk(check, verdict, context, outcome)
        return outcome

    @staticmethod
    def _junk(check: ICheck, verdict: Verdict, context: MailContext, outcome: ChainOutcome) -> None:
        """Note a ``junk`` verdict: its recipients (or every copy, with its shared reason for
        ``X-Ourmail-Junk``) and each recipient's own reason for the filter log."""
        shared = verdict.reason or "junk"
        if verdict.recipients:
            outcome.junk_recipients.extend(verdict.recipients)
        else:
            outcome.junk.append(f"{check.name}: {shared}")
        own = dict(verdict.reasons)
        reasons = context.notes.setdefault(JUNK_REASONS, {})
        assert isinstance(reasons, dict)
        for key in dict.fromkeys([*verdict.recipients, *own]):
            reasons.setdefault(key, []).append(f"{check.name}: {own.get(key, shared)}")

    def _record_refusal(
        self, check: ICheck, stage: Stage, context: MailContext, verdict: Verdict
    ) -> None:
        """A refusal at RCPT is that recipient's, at DATA every recipient's mailbox users' (an
        alias's users, as ``ourmail log filter USER`` asks); at connect and MAIL there is no
        recipient yet (the entry is found by the client address)."""
        if self.log is None:
            return
        if stage == "rcpt":
            recipients: list[str | None] = [context.recipient]
        elif stage == "data":
            recipients = list(
                dict.fromkeys(u for r in context.recipients for u in context.owners(r))
            )
        else:
            recipients = [None]
        self.log.record(
            [
                _event(context, verdict.action, stage, check.name, verdict.reply, r)
                for r in recipients
            ]
        )

    def _one(self, check: ICheck, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        d: Deferred[Verdict] = defer.maybeDeferred(check.check, stage, context)
        answered: list[bool] = []

        def seen(result: object) -> object:
            answered.append(True)
            return result

        d.addBoth(seen)
        if not answered:  # (a verdict given at once needs no timer: most, from caches)
            d.addTimeout(check.timeout, self._clock)

        def failed(failure: Failure) -> Verdict:
            timed_out = failure.check(defer.TimeoutError) is not None  # type: ignore[no-untyped-call]
            what = "timed out" if timed_out else "failed"
            if timed_out:
                log.warn(
                    "check {check} timed out after {timeout} s at {stage} ({policy})",
                    check=check.name,
                    timeout=check.timeout,
                    stage=stage,
                    policy=check.on_error,
                )
            else:
                log.failure(
                    "check {check} failed at {stage} ({policy})",
                    failure,
                    check=check.name,
                    stage=stage,
                    policy=check.on_error,
                )
            if check.on_error == "tempfail":
                return attrs.evolve(CHECK_FAILED, reason=f"{check.name} {what}")
            return Verdict(reason=f"{check.name} {what}")

        return d.addErrback(failed)


#: Where the data stage keeps the message's Message-ID for the filter log.
MESSAGE_ID = "chain.message-id"
#: Where the chain keeps the reasons of junk verdicts naming recipients: recipient -> reasons.
JUNK_REASONS = "chain.junk-reasons"
#: How much of a message on disk is read to find its Message-ID.
HEAD_READ = 64 * 1024


def _read_head(path: os.PathLike[str]) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEAD_READ)


async def _message_id(context: MailContext) -> str | None:
    """The message's Message-ID (a message on disk is read in a thread), or None."""
    content = context.content
    if content is None:
        return None
    if isinstance(content, bytes):
        return message_id(content[:HEAD_READ])
    try:
        head = await threads.deferToThread(_read_head, content)
    except OSError:
        return None
    return message_id(head)


def _event(
    context: MailContext, action: str, stage: Stage, check: str, reason: str, rcpt: str | None
) -> FilterEvent:
    mid = context.notes.get(MESSAGE_ID)
    return FilterEvent(
        at=time.time(),
        action=action,
        stage=stage,
        check=check,
        reason=reason,
        client_address=context.client_address,
        recipient=rcpt,
        sender=context.sender,
        message_id=mid if isinstance(mid, str) else None,
    )
