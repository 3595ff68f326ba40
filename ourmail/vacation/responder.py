"""The out-of-office responder (:class:`~ourmail.interfaces.IAutoResponder`): delivery tells
it of each message put into a user's INBOX; it answers when the user's reply is on and the
rules of :mod:`ourmail.vacation.rules` allow, at most once per sender per period
(:mod:`ourmail.vacation.record`).

The reply leaves with the null envelope sender (RFC 3834 §4, RFC 5321 §4.5.5: so that nothing
answers it back) through the outbound queue, which hands a recipient of a local domain to local
delivery and sends the others out, DKIM-signed as other mail.  Nothing here can delay
or fail a delivery: delivery does not wait for the responder, whose errors are logged.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.interfaces import IAutoResponder, IDirectory, IOutboundQueue, IPreferences
from ourmail.vacation.record import ReplyRecord
from ourmail.vacation.rules import read_header, refusal, reply
from ourmail.vacation.settings import KEY, Vacation
from ourmail.vacation.verified import HEAD_LIMIT, sender_verified

log = Logger()


def local_day(now: float) -> datetime.date:
    """The server's calendar day at ``now`` (the dates a user sets are the office's days)."""
    return datetime.date.fromtimestamp(now)


@implementer(IAutoResponder)
class AutoResponder:
    """Sends each user's out-of-office reply (see the module docstring)."""

    def __init__(
        self,
        preferences: IPreferences,
        directory: IDirectory,
        queue: IOutboundQueue,
        record: ReplyRecord,
        hostname: str,
        clock: IReactorTime,
        day: Callable[[float], datetime.date] = local_day,
        authserv_id: str = "",
    ) -> None:
        self.preferences = preferences
        self.directory = directory
        self.queue = queue
        self.record = record
        self.hostname = hostname
        self.clock = clock
        self.day = day
        #: This server's authserv-id: a reply goes only to a sender our results verified
        #: (docs/webmail.md#settings-and-out-of-office); "" replies without that check.
        self.authserv_id = authserv_id

    def delivered(self, mailbox: str, sender: str, head: bytes) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._respond(mailbox, sender, head))

        def failed(failure: Failure) -> None:
            log.failure(
                "out-of-office reply of {user} to <{sender}> failed",
                failure,
                user=mailbox,
                sender=sender,
            )

        return d.addErrback(failed)

    async def _respond(self, mailbox: str, sender: str, head: bytes) -> None:
        vacation = Vacation.from_json(self.preferences.get(mailbox, KEY))
        now = self.clock.seconds()
        if not vacation.active_on(self.day(now)):
            return
        # Parsing up to 64 KB of header fields takes a while: off the reactor.
        original = await deferToThread(read_header, head)
        why, addressed = refusal(
            original, sender, mailbox, lambda address: self.directory.may_send_as(mailbox, address)
        )
        if why is None and _cut_header(head):
            why = "the header is longer than what was read: List-* fields may be missed"
        if why is None and sender_verified(head, self.authserv_id, sender) is False:
            why = "the sender's address was not verified (SPF or DKIM)"
        if why is None:
            handle = hashlib.sha256(f"{vacation.subject}\0{vacation.text}".encode()).hexdigest()
            key = (mailbox, sender.lower(), handle[:32])
            why = await deferToThread(self.record.claim, *key, vacation.days, now)
        if why is not None:
            log.info(
                "no out-of-office reply from {user} to <{sender}>: {why}",
                user=mailbox,
                sender=sender,
                why=why,
            )
            return
        assert addressed is not None
        try:
            # The email package takes a few milliseconds to write a message: off the reactor.
            content, utf8 = await deferToThread(
                reply, vacation, original, addressed, sender, self.hostname, now
            )
            qid = await self.queue.enqueue(
                "", [(sender, NO_RCPT_PARAMS)], content, NO_MAIL_PARAMS, utf8
            )
        except Exception:
            await deferToThread(self.record.forget, *key)
            raise
        log.info(
            "out-of-office reply from {user} to <{sender}> queued as {id}",
            user=mailbox,
            sender=sender,
            id=qid,
        )


def _cut_header(head: bytes) -> bool:
    """Whether ``head`` (the message's first octets, as delivery read them) ends inside the
    header section: fields that forbid a reply may lie beyond it."""
    return len(head) >= HEAD_LIMIT and b"\n\r\n" not in head and b"\n\n" not in head
