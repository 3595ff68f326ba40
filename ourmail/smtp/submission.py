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

from ourmail.config import SubmissionSettings
from ourmail.mime import structure

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
