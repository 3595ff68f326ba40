"""A client for SpamAssassin's ``spamd`` (the SPAMC/SPAMD protocol, version 1.5), on Twisted.

Implementation notes (keep these true when changing this module):

* One request per connection, as ``spamc`` does: ``SYMBOLS SPAMC/1.5`` (or ``CHECK``,
  ``REPORT``, ``TELL``) with ``Content-length`` and ``User``, a blank line and the message;
  spamd answers ``SPAMD/1.1 0 EX_OK``, header lines (``Spam: True ; 15.0 / 5.0``,
  ``Content-length``, ``DidSet``), a blank line and a body, then closes the connection.
* The reply is bounded (:attr:`SpamdClient.max_reply`): a longer one aborts the connection
  and fails with :class:`SpamdError`, as does one that is not of that form or a spamd error
  (``SPAMD/1.0 76 Bad header line``).  A spamd that never answers is cut off after
  :attr:`SpamdClient.timeout` seconds (:class:`SpamdTimeout`).  A request its caller
  cancels (the chain's time-out, the learning's, a stop) fails with ``CancelledError`` and
  leaves nothing behind: the connection attempt is cancelled or the connection aborted.
* ``TELL`` (learning) needs spamd started with ``--allow-tell``; without it spamd answers
  ``EX_NOPERM`` and :meth:`SpamdClient.tell` fails.
"""

from __future__ import annotations

import ipaddress
import re

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.filters.spamscan import Envelope, ScannerError, ScannerTimeout, SpamScore
from ourmail.interfaces import ISpamLearner

__all__ = ["SpamScore", "SpamdClient", "SpamdError", "SpamdLearner", "SpamdTimeout"]

#: spamd's default port (the IANA ``spamassassin`` port).
DEFAULT_PORT = 783
VERSION = b"SPAMC/1.5"
_STATUS = re.compile(rb"SPAMD/(\d+)\.(\d+) +(\d+) +(.*)")
_SPAM = re.compile(r"(True|False|Yes|No) ; (-?\d+(?:\.\d+)?) / (-?\d+(?:\.\d+)?)")
#: spamd's EX_OK; other codes are sysexits.h values (EX_PROTOCOL 76, EX_NOPERM 77, ...).
EX_OK = 0


class SpamdError(ScannerError):
    """spamd could not be asked, refused the request, or answered something unusable."""


class SpamdTimeout(SpamdError, ScannerTimeout):
    """spamd did not answer in time."""


@attrs.frozen
class SpamdReply:
    """One spamd answer: its status code and text, header fields (lower-case names) and
    body."""

    code: int
    message: str
    headers: dict[str, str]
    body: bytes


def parse_reply(data: bytes) -> SpamdReply:
    """A spamd reply; :class:`SpamdError` for anything else."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = _STATUS.fullmatch(lines[0])
    if status is None:
        raise SpamdError(f"not a spamd reply: {lines[0][:80]!r}")
    code, text = int(status.group(3)), status.group(4).decode("ascii", "replace")
    if code != EX_OK:
        raise SpamdError(f"spamd refused: {code} {text}")
    if not sep:
        # A TELL that did nothing and a bare error line may end with only CRLF.
        if not data.endswith(b"\r\n"):
            raise SpamdError("spamd's reply was cut short")
        body = b""
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            # The CRLF ending a reply with no blank line and no body (``SPAMD/1.5 0 PONG``).
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise SpamdError(f"bad header line in spamd's reply: {line[:80]!r}")
        headers[name.strip().decode("ascii", "replace").lower()] = value.strip().decode(
            "ascii", "replace"
        )
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit() or int(length) > len(body):
            raise SpamdError(f"spamd's reply was cut short (content-length {length[:20]})")
        body = body[: int(length)]
    return SpamdReply(code, text, headers, body)


def parse_score(reply: SpamdReply) -> SpamScore:
    """The ``Spam:`` field of a CHECK/SYMBOLS/REPORT reply (and SYMBOLS' rule names)."""
    match = _SPAM.fullmatch(reply.headers.get("spam", ""))
    if match is None:
        raise SpamdError(f"spamd's reply has no usable Spam: field: {reply.headers!r}"[:200])
    names = reply.body.decode("ascii", "replace").strip()
    symbols = tuple(s.strip() for s in names.split(",") if s.strip())
    return SpamScore(
        match.group(1) in ("True", "Yes"),
        float(match.group(2)),
        float(match.group(3)),
        symbols,
    )


class _Exchange(Protocol):
    """Sends one request, collects the reply until spamd closes the connection."""

    def __init__(self, request: bytes, limit: int) -> None:
        self.request, self.limit = request, limit
        self.received = bytearray()
        #: Cancelling it (the caller gave up: the chain's time-out, a stop) aborts the
        #: connection, so no request outlives its caller.
        self.done: Deferred[bytes] = Deferred(lambda _: self.abort())
        self.overflow = False

    def abort(self) -> None:
        """Drop the connection now, if there is one (no reply is waited for)."""
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)
        self.request = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) > self.limit and not self.overflow:
            self.overflow = True
            assert self.transport is not None
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.overflow:
            self.done.errback(SpamdError(f"spamd's reply is longer than {self.limit} bytes"))
        else:
            self.done.callback(bytes(self.received))


def endpoint(reactor: object, address: str, timeout: float) -> IStreamClientEndpoint:
    """The endpoint of ``address``: ``IP:PORT``, ``[IPv6]:PORT``, an IP alone (port 783), or a
    unix socket path (starting with ``/``).  An IP address, not a name: lookups go through
    twisted.names only, and spamd runs on this host or one next to it (``localhost`` is
    taken as 127.0.0.1)."""
    if address.startswith("/"):
        return UNIXClientEndpoint(reactor, address, timeout=int(timeout) or 1)  # type: ignore[no-untyped-call]
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or (":" in host and not host.startswith("[")):
        host, port = address, str(DEFAULT_PORT)
    host = "127.0.0.1" if host == "localhost" else host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None or not 0 < int(port) < 65536:
        raise ValueError(
            f"bad spamd address {address!r}: use IP:PORT, [IPv6]:PORT or /path/to/socket"
        )
    if ip.version == 6:
        return TCP6ClientEndpoint(reactor, host, int(port), timeout=int(timeout) or 1)  # type: ignore[no-untyped-call]
    return TCP4ClientEndpoint(reactor, host, int(port), timeout=int(timeout) or 1)


class SpamdClient:
    """Asks one spamd (``address``: see :func:`endpoint`); every request is bounded by
    ``timeout`` seconds and a reply by ``max_reply`` bytes."""

    def __init__(
        self,
        reactor: IReactorTime,
        address: str,
        timeout: float = 30.0,
        max_reply: int = 64 * 1024,
    ) -> None:
        self.reactor, self.address = reactor, address
        self.timeout, self.max_reply = timeout, max_reply
        self._endpoint = endpoint(reactor, address, timeout)

    def request(
        self, command: str, message: bytes, user: str | None, extra: dict[str, str] | None = None
    ) -> Deferred[SpamdReply]:
        """Send ``command`` (``SYMBOLS``, ``CHECK``, ``REPORT``, ``TELL``) with ``message``;
        fires with the reply, fails with :class:`SpamdError`."""
        fields = {"Content-length": str(len(message))}
        if user:
            fields["User"] = _field_value(user)
        fields.update(extra or {})
        request = command.encode("ascii") + b" " + VERSION + b"\r\n"
        request += b"".join(f"{k}: {v}\r\n".encode("ascii") for k, v in fields.items())
        request += b"\r\n" + message
        exchange = _Exchange(request, self.max_reply)
        return Deferred.fromCoroutine(self._run(exchange))

    async def _run(self, exchange: _Exchange) -> SpamdReply:
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            connecting.cancel()
            exchange.abort()

        call = self.reactor.callLater(self.timeout, expire)
        # Cancelling the request cancels what it awaits: the connection attempt (the
        # endpoint's canceller) or the reply (``exchange.done``'s, which aborts).
        connecting = self._endpoint.connect(Factory.forProtocol(lambda: exchange))
        try:
            try:
                await connecting
            except (defer.CancelledError, ConnectingCancelledError):
                if not timed_out:
                    raise defer.CancelledError() from None  # the caller's, not our time-out
                raise SpamdTimeout(f"spamd at {self.address} did not answer in time") from None
            except Exception as e:
                raise SpamdError(f"cannot reach spamd at {self.address}: {e}") from e
            data = await exchange.done
        finally:
            if call.active():
                call.cancel()
        if timed_out:
            raise SpamdTimeout(f"spamd at {self.address} did not answer in {self.timeout} s")
        if not data:
            raise SpamdError(f"spamd at {self.address} closed the connection without answering")
        return parse_reply(data)

    def symbols(self, message: bytes, user: str | None = None) -> Deferred[SpamScore]:
        """Score ``message`` (as ``user``'s mail): spam or not, score, rules hit."""
        return self.request("SYMBOLS", message, user).addCallback(parse_score)

    def scan(self, message: bytes, envelope: Envelope) -> Deferred[SpamScore]:
        """:meth:`symbols`, as the spam check asks every scanner."""
        return self.symbols(message, envelope.user)

    def tell(self, message: bytes, user: str | None, spam: bool) -> Deferred[bool]:
        """Teach spamd's Bayes database (``TELL``, ``Set: local``); fires with whether it
        learned something (False: it had already learned this message as such)."""
        extra = {"Message-class": "spam" if spam else "ham", "Set": "local"}
        d = self.request("TELL", message, user, extra)
        return d.addCallback(lambda reply: "local" in reply.headers.get("didset", ""))

    def ping(self) -> Deferred[None]:
        """Whether spamd answers at all (``PING``: ``SPAMD/1.5 0 PONG``)."""
        exchange = _Exchange(b"PING " + VERSION + b"\r\n\r\n", self.max_reply)
        return Deferred.fromCoroutine(self._run(exchange)).addCallback(lambda _: None)


def _field_value(value: str) -> str:
    """A value safe for one header line of the request (no line breaks, ASCII)."""
    return value.replace("\r", "").replace("\n", "").encode("ascii", "replace").decode("ascii")


@implementer(ISpamLearner)
class SpamdLearner:
    """Learning through spamd's ``TELL`` (spamd needs ``--allow-tell``)."""

    def __init__(self, client: SpamdClient) -> None:
        self.client = client

    def learn(self, user: str, message: bytes, spam: bool) -> Deferred[None]:
        return self.client.tell(message, user, spam).addCallback(lambda _: None)
