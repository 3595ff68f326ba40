"""The ``antivirus`` check: every message scanned by clamd at the end of DATA/BDAT.

Implementation notes (keep these true when changing this module; docs/filters.md has the
admin's view):

* The check runs at ``data``, on the MX and, being ``trusted`` by default, on submission and
  LMTP too.  The message is scanned before it is acknowledged, so a virus is refused with
  ``554 5.7.1`` (RFC 5321 §4.2.2, RFC 3463 X.7.1 delivery not authorized) naming the
  signature, and a message is never accepted and then dropped.
* clamd down, closing the connection, answering garbage or not answering within the check's
  ``timeout``: ``on_error = "tempfail"`` (the default) answers ``451 4.7.1`` itself, so the
  sender tries again later (RFC 5321 §4.2.1); ``on_error = "accept"`` takes the message with
  an ``X-Ourmail-Virus-Scan: not scanned (...)`` field.  The check gives clamd a little less
  than ``timeout`` (:data:`MARGIN`) so that it answers before the chain's own time-out, whose
  generic ``451 4.7.0`` is left for a failure of the check itself.
* A message larger than ``max_size`` (not sent) or than clamd's StreamMaxLength (clamd's
  refusal) follows ``oversize``: ``refuse`` (the default) answers ``552 5.3.4`` (RFC 3463
  X.3.4 message too big for system), ``accept`` takes it with an
  ``X-Ourmail-Virus-Scan: not scanned (too large ...)`` field.  Never silently.
* A scanned clean message gets ``X-Virus-Scanned: clamd on HOST``.  The signature name comes
  from clamd's database: it is cut to printable ASCII and :data:`MAX_SIGNATURE` characters
  before it goes into a reply or the log.
* What the scan found is left in ``context.notes["antivirus"]`` for later checks and the
  filter log: ``{"result": "clean"}``, ``{"result": "infected", "signature": NAME}`` or
  ``{"result": "not scanned", "reason": WHY}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.filters.clamd import (
    DEFAULT_MAX_SIZE,
    ClamdClient,
    ClamdError,
    ClamdSizeLimit,
    TooLarge,
)
from ourmail.filters.options import refuse_unknown
from ourmail.interfaces import (
    FilterEnvironment,
    ICheck,
    ICheckFactory,
    MailContext,
    Stage,
    Verdict,
    refuse,
)

log = Logger()

#: Debian's clamd listens here (``LocalSocket`` in /etc/clamav/clamd.conf).
DEFAULT_ADDRESS = "/run/clamav/clamd.ctl"
DEFAULT_TIMEOUT = 60.0
#: The check stops waiting for clamd this much (at most a tenth of timeout) before the chain.
MARGIN = 1.0
MAX_SIGNATURE = 100
#: Header fields: the scan's outcome on accepted mail.
SCANNED = "X-Virus-Scanned"
NOT_SCANNED = "X-Ourmail-Virus-Scan"
OPTIONS = {"address", "max_size", "oversize", "connections"}
_NOT_NAME = re.compile(r"[^\x21-\x7e]+")

Policy = Literal["refuse", "accept"]


def sanitise(signature: str) -> str:
    """A signature name fit for an SMTP reply and the log: printable ASCII without spaces,
    at most :data:`MAX_SIGNATURE` characters."""
    clean = _NOT_NAME.sub("_", signature.strip())
    return clean if len(clean) <= MAX_SIGNATURE else clean[: MAX_SIGNATURE - 3] + "..."


@implementer(ICheck)
class AntivirusCheck:
    """The antivirus check (see the module notes)."""

    name = "antivirus"
    stages: tuple[Stage, ...] = ("data",)

    def __init__(
        self, client: ClamdClient, clock: IReactorTime, hostname: str, oversize: Policy = "refuse"
    ) -> None:
        self.timeout = DEFAULT_TIMEOUT
        self.on_error = "tempfail"
        self.trusted = True
        self.client = client
        self.oversize = oversize
        self._clock = clock
        self._hostname = hostname

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        if context.content is None:
            return defer.succeed(Verdict())
        return Deferred.fromCoroutine(self._scan(context))

    async def _scan(self, context: MailContext) -> Verdict:
        assert context.content is not None
        scan = self.client.scan(context.content)
        scan.addTimeout(self.timeout - min(MARGIN, self.timeout / 10), self._clock)
        try:
            result = await scan
        except (TooLarge, ClamdSizeLimit) as e:
            return self._too_large(context, e)
        except (ClamdError, defer.TimeoutError) as e:
            return self._unavailable(context, e)
        if result.signature is None:
            context.notes[self.name] = {"result": "clean"}
            return Verdict(headers=((SCANNED, f"clamd on {self._hostname}"),))
        signature = sanitise(result.signature)
        context.notes[self.name] = {"result": "infected", "signature": signature}
        log.info(
            "antivirus: {signature} found in mail from {peer} <{sender}>: refused",
            signature=signature,
            peer=context.client_address,
            sender=context.sender,
        )
        return refuse(554, "5.7.1", f"Message refused: virus found ({signature})")

    def _unavailable(self, context: MailContext, error: Exception) -> Verdict:
        why = "no answer in time" if isinstance(error, defer.TimeoutError) else str(error)
        context.notes[self.name] = {"result": "not scanned", "reason": why}
        log.warn(
            "antivirus: clamd at {address} unavailable ({why}) for mail from {peer}: {policy}",
            address=self.client.address,
            why=why,
            peer=context.client_address,
            policy="accepted, not scanned" if self.on_error == "accept" else "451",
        )
        if self.on_error == "accept":
            return Verdict(headers=((NOT_SCANNED, "not scanned (clamd unavailable)"),))
        return refuse(451, "4.7.1", "Virus scanner unavailable, try again later")

    def _too_large(self, context: MailContext, error: Exception) -> Verdict:
        if isinstance(error, ClamdSizeLimit):
            log.warn(
                "antivirus: clamd refused a stream as too long: its StreamMaxLength is below "
                "max_size ({max_size} bytes)",
                max_size=self.client.max_size,
            )
        context.notes[self.name] = {"result": "not scanned", "reason": "too large"}
        log.info(
            "antivirus: message from {peer} too large to scan ({error}): {policy}",
            peer=context.client_address,
            error=str(error),
            policy="accepted, not scanned" if self.oversize == "accept" else "552",
        )
        if self.oversize == "accept":
            return Verdict(headers=((NOT_SCANNED, "not scanned (too large for the scanner)"),))
        return refuse(552, "5.3.4", "Message too large for the virus scanner")


def _positive_int(options: Mapping[str, object], key: str, default: int) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key!r} must be a positive whole number")
    return value


@implementer(ICheckFactory)
class AntivirusFactory:
    """Builds the ``antivirus`` check from ``[filters.check.antivirus]`` (docs/filters.md)."""

    name = "antivirus"

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        refuse_unknown(options, OPTIONS)
        address = options.get("address", DEFAULT_ADDRESS)
        if not isinstance(address, str):
            raise ValueError("'address' must be a unix socket path or HOST:PORT")
        oversize = options.get("oversize", "refuse")
        if oversize not in ("refuse", "accept"):
            raise ValueError("'oversize' must be 'refuse' or 'accept'")
        client = ClamdClient(
            env.reactor,
            address,
            connections=_positive_int(options, "connections", 8),
            max_size=_positive_int(options, "max_size", DEFAULT_MAX_SIZE),
        )
        clock = cast(IReactorTime, env.reactor)
        return AntivirusCheck(client, clock, env.hostname, oversize)


factory = AntivirusFactory()
