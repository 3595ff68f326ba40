"""What the spam check asks of a scanner (spamd, rspamd), whichever it is."""

from __future__ import annotations

from typing import Protocol

import attrs
from twisted.internet.defer import Deferred


class ScannerError(Exception):
    """The scanner could not be asked, refused, or answered something unusable."""


class ScannerTimeout(ScannerError):
    """The scanner did not answer in time."""


@attrs.frozen
class SpamScore:
    """What a scanner thinks of a message: spam or not, its score, the score it calls spam
    (``required``), the rules that hit and, for rspamd, its action (``no action``,
    ``add header``, ``reject``...)."""

    spam: bool
    score: float
    required: float
    symbols: tuple[str, ...] = ()
    action: str = ""


@attrs.frozen
class Envelope:
    """What the scanner may know of the message's transport (rspamd uses it; spamd only
    the user)."""

    client_address: str = ""
    helo: str | None = None
    sender: str | None = None
    recipients: tuple[str, ...] = ()
    #: The recipient whose preferences the scanner applies (one recipient), or None.
    user: str | None = None


class Scanner(Protocol):
    """A spam scanner client."""

    #: Seconds a scan may take (the check sets it below its own time-out).
    timeout: float

    def scan(self, message: bytes, envelope: Envelope) -> Deferred[SpamScore]:
        """Score ``message``; fails with :class:`ScannerError`."""
