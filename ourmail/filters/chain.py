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
  (:attr:`ChainOutcome.junk_recipients`); one without files every copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.filters import authresults
from ourmail.interfaces import (
    ChainOutcome,
    ICheck,
    IFilterChain,
    MailContext,
    Stage,
    Verdict,
    refuse,
)

log = Logger()

#: RFC 3463 §3.8: X.7.0 other security or policy status; the client retries.
CHECK_FAILED = refuse(451, "4.7.0", "Temporary failure in a mail check, try again later")


@implementer(IFilterChain)
class FilterChain:
    """The checks of one server, in order."""

    def __init__(self, checks: Sequence[ICheck], clock: IReactorTime, authserv_id: str) -> None:
        self.checks = tuple(checks)
        self._clock = clock
        self.authserv_id = authserv_id

    def strip(self, head: bytes) -> bytes:
        names = [n for c in self.checks for n in getattr(c, "replaces_fields", ())]
        return authresults.strip_named(authresults.strip_own(head, self.authserv_id), names)

    def fields(self, context: MailContext, outcome: ChainOutcome) -> bytes:
        added = authresults.header(self.authserv_id, context.results)
        added += b"".join(authresults.field(n, v) for n, v in outcome.headers)
        if outcome.junk:
            added += authresults.field("X-Ourmail-Junk", "; ".join(outcome.junk))
        return added

    def runs_at(self, stage: Stage, trusted: bool = False) -> bool:
        """Whether any check runs at ``stage`` (on mail the listener trusts, if ``trusted``)."""
        return any(stage in c.stages and (c.trusted or not trusted) for c in self.checks)

    def run(self, stage: Stage, context: MailContext) -> Deferred[ChainOutcome]:
        """Run every check that runs at ``stage``; their results join ``context.results``."""
        return Deferred.fromCoroutine(self._run(stage, context))

    async def _run(self, stage: Stage, context: MailContext) -> ChainOutcome:
        outcome = ChainOutcome()
        for check in self.checks:
            if stage not in check.stages or (context.trusted and not check.trusted):
                continue
            verdict = await self._one(check, stage, context)
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
                return outcome
            if verdict.action == "junk" and verdict.recipients:
                outcome.junk_recipients.extend(verdict.recipients)
            elif verdict.action == "junk":
                outcome.junk.append(f"{check.name}: {verdict.reason or 'junk'}")
        return outcome

    def _one(self, check: ICheck, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        d: Deferred[Verdict] = defer.maybeDeferred(check.check, stage, context)
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
