"""Where an SMTP session meets the filter chain (``ourmail.filters``): the chain's verdicts
at connect, MAIL, RCPT and the end of DATA, and what they change in the message.

Implementation notes (keep these true when changing this module):

* The session waits for the chain (input paused) and answers with the chain's refusal, if
  any; a check's own failure has already been turned into accept or 451 by the chain.
* A client refused at connect gets ``554`` (RFC 5321 §3.1) and then ``503`` to every command
  but QUIT, so it hears why instead of seeing the connection drop.
* At the end of DATA the checks see the message as it will be stored; then any
  ``Authentication-Results:`` field claiming this host's authserv-id is removed (RFC 8601
  §5), ours and the checks' own fields are added below our Received: field, and a ``junk``
  verdict files the message into the recipients' Junk folder.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred

from ourmail.interfaces import STAGES, ChainOutcome, IFilterChain, MailContext, Stage
from ourmail.smtp.spool import Spool

#: The longest header section taken (Postfix keeps 100 KB of one): every field of it is
#: looked at for forged Authentication-Results, so a longer one is refused, not half-checked.
HEADER_SCAN = 256 * 1024
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def run_stage(
    chain: IFilterChain, stage: Stage, context: MailContext, verdicts: ChainOutcome
) -> Deferred[ChainOutcome | None]:
    """Run the chain at ``stage``; fires with the outcome when it refuses, else None after
    adding its junk verdicts and header fields to ``verdicts`` (they wait for the end of
    DATA)."""

    def decided(outcome: ChainOutcome) -> ChainOutcome | None:
        if outcome.refusal is not None:
            return outcome
        verdicts.junk += outcome.junk
        verdicts.junk_recipients += outcome.junk_recipients
        verdicts.headers += outcome.headers
        return None

    return chain.run(stage, context).addCallback(decided)


def header_end(head: bytes) -> int | None:
    """Where the header section ends in ``head`` (after the blank line), or None."""
    match = _HEADER_END.search(head)
    return match.end() if match else None


def header_too_large(spool: Spool, head: bytes) -> bool:
    """Whether the message's header section is longer than :data:`HEADER_SCAN` (``head``:
    its first :data:`HEADER_SCAN` bytes)."""
    return header_end(head) is None and spool.size > len(head)


def rewrite_header(spool: Spool, chain: IFilterChain, fields: bytes, at: int, head: bytes) -> None:
    """Remove forged results under our authserv-id (on every listener), then add ``fields``
    at ``at``: just below this host's own Received: field, which stays the first line (the
    trace of this hop, RFC 5321 §4.4), as large providers place theirs.  Reads and may rewrite
    a spool file: call it in a thread for a message on disk.  ``head``: the spool's first
    :data:`HEADER_SCAN` bytes."""
    end = header_end(head) or len(head)
    cleaned = chain.strip(head[at:end])
    if len(cleaned) != end - at:
        spool.replace(at, end - at, cleaned)
    if fields:
        spool.insert(at, fields)


def added_fields(chain: IFilterChain, context: MailContext, outcome: ChainOutcome) -> bytes:
    """Our Authentication-Results and the checks' fields, when a check ran on this mail."""
    if not any(chain.runs_at(stage, context.trusted) for stage in STAGES):
        return b""
    return chain.fields(context, outcome)
