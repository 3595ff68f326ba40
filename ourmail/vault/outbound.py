"""The mail the server itself sends, kept in the vault before it is queued (issue 18 point 1:
"every message that ... leaves the organisation").

Mail that users send, and mail that arrives and is forwarded, is captured where it is
received (``smtp/delivery.py``).  What the server writes on its own account goes straight to
the outbound queue: out-of-office replies (``ourmail/vacation``), DMARC aggregate reports
(``filters/dmarcreport.py``) and TLS reports (``queue/tlsrpt``).  :class:`CapturingQueue`
stands in front of the queue for those: each message is captured (``via: system``) and,
once its record is durable, queued; a capture that fails fails the enqueue, so nothing
leaves that the vault lacks.

Delivery status notifications to senders elsewhere are written inside the queue, from the
original message, which the vault already holds; they are not captured (docs/vault.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ourmail.dsnparams import NO_MAIL_PARAMS, MailParams, RcptParams
from ourmail.interfaces import IOutboundQueue, IVault, VaultEnvelope


@implementer(IOutboundQueue)
class CapturingQueue:
    """An :class:`IOutboundQueue` that captures each message in ``vault`` before handing it
    to ``queue`` (see the module text)."""

    def __init__(self, queue: IOutboundQueue, vault: IVault, clock: IReactorTime) -> None:
        self.queue = queue
        self.vault = vault
        self.clock = clock

    def enqueue(
        self,
        sender: str,
        recipients: Sequence[tuple[str, RcptParams]],
        content: bytes | os.PathLike[str],
        mail_params: MailParams = NO_MAIL_PARAMS,
        utf8: bool = False,
        forwarded: bool = False,
        verp: bool = False,
        personal: Mapping[str, bytes] | None = None,
        key: str = "",
    ) -> Deferred[str]:
        envelope = VaultEnvelope(
            via="system",
            sender=sender,
            recipients=tuple(dict.fromkeys(address for address, _ in recipients)),
            arrival=self.clock.seconds(),
        )
        d: Deferred[Any] = self.vault.capture(content, envelope)
        d.addCallback(
            lambda _: self.queue.enqueue(
                sender, recipients, content, mail_params, utf8, forwarded, verp, personal, key
            )
        )
        return d

    def report_delivered(
        self,
        sender: str,
        mail_params: MailParams,
        arrival: float,
        content: bytes | os.PathLike[str],
        delivered: Sequence[tuple[str, RcptParams]],
    ) -> Deferred[object]:
        return self.queue.report_delivered(sender, mail_params, arrival, content, delivered)
