"""Rules for mail submitted by authenticated users (RFC 6409): who they may send as, missing
header fields, sending rates.

* The envelope sender and every ``From:`` address must be the authenticated user's own address
  or an alias that delivers to them (``IDirectory.may_send_as``); otherwise ``553 5.7.1``.
* A message without ``Message-ID:`` or ``Date:`` gets them (RFC 6409 §8.2, §8.3).
* Each user may send ``max_messages_per_hour`` messages to ``max_recipients_per_hour``
  recipients in any hour (counted in this process); beyond that, ``451 4.7.1``.
"""

from __future__ import annotations

import collections
import email.utils
import secrets
import time
from collections.abc import Callable
from email.utils import getaddresses

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from ourmail.addresses import AddressError, normalise_address
from ourmail.config import SubmissionSettings
from ourmail.interfaces import IContactBook, IDirectory, IMailStore, MessageSource, Recipient
from ourmail.mime import structure
from ourmail.smtp.spool import Spool

log = Logger()

#: How much of the message start is read to find its header.
HEADER_LIMIT = 1 << 20
WINDOW = 3600.0


@attrs.frozen
class HeaderCheck:
    from_addresses: list[str]
    missing: list[str]


def check_header(start: bytes, skip: int) -> HeaderCheck:
    """The ``From:`` addresses and which of Message-ID/Date are missing, from the start of the
    spooled message (after ``skip`` bytes of our own Received: header)."""
    head = start[skip:]
    end = head.find(b"\r\n\r\n")
    part = structure.parse(head[: end + 4] if end >= 0 else head)
    names = {name for name, _ in part.fields}
    froms = [addr.lower() for _, addr in getaddresses([part.header("from") or ""]) if addr]
    missing = [n for n in ("message-id", "date") if n not in names]
    return HeaderCheck(froms, missing)


def may_send_as(directory: IDirectory, user: str, address: str) -> bool:
    """Whether ``user`` may use ``address`` (as written by the client) as a sender."""
    try:
        return directory.may_send_as(user, normalise_address(address))
    except AddressError:
        return False


def complete_header(spool: Spool, at: int, hostname: str, owned: Callable[[str], bool]) -> bool:
    """RFC 6409 §8: False when the message has no ``From:`` or one that is not ``owned``
    by the user; else add a missing ``Message-ID:`` and ``Date:`` at ``at`` (below this
    host's Received: field) and True."""
    header = check_header(spool.head(at + HEADER_LIMIT), at)
    if not header.from_addresses or not all(owned(a) for a in header.from_addresses):
        return False
    if header.missing:
        spool.insert(at, added_fields(header.missing, hostname))
    return True


def rate_weight(rcpt: Recipient) -> int:
    """What one recipient counts towards the hourly recipient limit: the addresses elsewhere
    it expands to (a group's outside members, forwards), at least one; so a group or a
    forwarding user does not make one RCPT into a thousand messages out past the limit."""
    return max(1, len(rcpt.outbound))


@inlineCallbacks
def after_submission(
    user: str,
    source: MessageSource,
    recipients: list[str],
    rates: SendingRates | None,
    store: IMailStore,
    sent_folder: str | None,
    contacts: IContactBook | None,
    weight: int | None = None,
) -> Deferred[None]:
    """What follows a submitted message once it is durable: it counts towards the user's
    rates (``weight`` recipients, by default one per recipient: :func:`rate_weight`), a copy
    goes into ``sent_folder`` (None: none) and the contacts book learns the recipients.  A
    failure of the copy or the book is logged: the message is sent."""
    if rates is not None:
        rates.record(user, len(recipients) if weight is None else weight)
    if sent_folder is not None:
        try:
            yield store.user(user).deliver(source, sent_folder, ["\\Seen"])
        except Exception:
            log.failure("could not keep a copy of {user}'s message in Sent", user=user)
    if contacts is not None:
        try:
            yield contacts.sent(user, recipients)
        except Exception:
            log.failure("could not record the contacts of {user}'s message", user=user)


def added_fields(missing: list[str], hostname: str) -> bytes:
    out = b""
    if "message-id" in missing:
        out += f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n".encode()
    if "date" in missing:
        out += f"Date: {email.utils.formatdate(localtime=True)}\r\n".encode()
    return out


class SendingRates:
    """Messages and recipients each user sent within the last hour, in this process."""

    def __init__(self, settings: SubmissionSettings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self._sent: dict[str, collections.deque[tuple[float, int]]] = {}

    def _recent(self, user: str) -> collections.deque[tuple[float, int]]:
        sent = self._sent.setdefault(user, collections.deque())
        limit = self.clock() - WINDOW
        while sent and sent[0][0] < limit:
            sent.popleft()
        return sent

    def may_send(self, user: str, more_recipients: int = 0) -> bool:
        sent = self._recent(user)
        recipients = sum(n for _, n in sent) + more_recipients
        return (
            len(sent) < self.settings.max_messages_per_hour
            and recipients <= self.settings.max_recipients_per_hour
        )

    def record(self, user: str, recipients: int) -> None:
        self._recent(user).append((self.clock(), recipients))

    def reserve(self, user: str, recipients: int) -> tuple[float, int] | None:
        """Count a message to ``recipients`` now, if it is within the limits (None if not):
        sends running at the same time cannot all pass the check before any is counted.
        :meth:`release` takes it back when nothing was sent."""
        if not self.may_send(user, recipients):
            return None
        entry = (self.clock(), recipients)
        self._recent(user).append(entry)
        return entry

    def release(self, user: str, entry: tuple[float, int]) -> None:
        """Take back a :meth:`reserve` whose message was not sent."""
        sent = self._sent.get(user)
        if sent is not None and entry in sent:
            sent.remove(entry)
