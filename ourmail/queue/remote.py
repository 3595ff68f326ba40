"""Opening an SMTP session to the next hop of a domain: its MX hosts, or the smart host.

MX delivery (RFC 5321 §5.1): hosts in preference order, each host's addresses in turn, until
one greets and answers EHLO.  STARTTLS is used whenever offered, without a certificate check
(opportunistic TLS, RFC 7435); when the handshake fails, the same host is tried again at once
in plaintext, and for an hour after that without TLS, as Postfix does at its "may" level.  A
smart host (``[queue.relay]``) must offer TLS with a certificate valid for its name; AUTH is
sent only over that TLS.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.logger import Logger

from ourmail.config import QueueSettings
from ourmail.net.tls import opportunistic_client_context, verified_client_context
from ourmail.queue.client import ClientSession, ReplyReader, SessionError
from ourmail.queue.mx import MXResolver, RouteError

log = Logger()

#: At most this many MX hosts, and addresses per host, are tried per connection attempt.
MAX_HOSTS = 5
MAX_ADDRESSES = 2
#: Seconds an address whose TLS handshake failed is sent to in plaintext.
PLAINTEXT_AFTER_TLS_FAILURE = 3600


class TLSFailed(SessionError):
    """The opportunistic TLS handshake failed; the address is now tried in plaintext."""


@attrs.frozen
class Route:
    """How to reach one destination."""

    key: str  # the destination, for logs: a domain, or "relay"
    domain: str  # whose MX hosts to look up ("" for the smart host)
    port: int
    smart_host: str | None = None
    implicit_tls: bool = False
    username: str = ""
    password_file: str = ""
    ca_file: str = ""


def route_for(domain: str, settings: QueueSettings) -> Route:
    relay = settings.relay
    if relay.host:
        host, port = relay.address
        return Route(
            key="relay",
            domain="",
            port=port,
            smart_host=host,
            implicit_tls=relay.tls == "implicit",
            username=relay.username,
            password_file=relay.password_file,
            ca_file=relay.ca_file,
        )
    return Route(key=domain, domain=domain, port=settings.smtp_port)


class Connector:
    """Opens ready-to-send sessions (greeted, TLS, authenticated) for routes."""

    def __init__(
        self,
        reactor: IReactorTCP,
        clock: IReactorTime,
        mx: MXResolver,
        settings: QueueSettings,
        helo: str,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.mx = mx
        self.settings = settings
        self.helo = helo
        #: Addresses whose TLS handshake failed, and until when they get plaintext.
        self.plaintext_until: dict[str, float] = {}

    async def open(self, route: Route) -> ClientSession:
        """A session to the first host of ``route`` that works; RouteError/SessionError if none."""
        if route.smart_host is not None:
            hosts = [route.smart_host]
        else:
            hosts = (await self.mx.mail_hosts(route.domain))[:MAX_HOSTS]
        last: Exception = RouteError("4.4.4", f"No mail host for {route.domain}")
        for host in hosts:
            addresses = (await self.mx.addresses(host))[:MAX_ADDRESSES]
            if not addresses:
                last = RouteError("4.4.4", f"Host {host} has no address")
                continue
            for address in addresses:
                try:
                    try:
                        return await self._session(route, host, address)
                    except TLSFailed as e:
                        log.warn("queue: {error}; trying again without TLS", error=e)
                        return await self._session(route, host, address)
                except SessionError as e:
                    log.info(
                        "queue: {host}[{address}] {error}", host=host, address=address, error=e
                    )
                    if e.status == "5.4.6":
                        raise
                    last = e
        if isinstance(last, SessionError) and last.status.startswith("5"):
            # A host that refuses us outright may be fine tomorrow: keep the mail (as Postfix's
            # smtp_skip_5xx_greeting does).
            last = SessionError("4" + last.status[1:], last.diagnostic)
        raise last

    async def _session(self, route: Route, host: str, address: str) -> ClientSession:
        endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint = endpoint_type(
            self.reactor, address, route.port, timeout=self.settings.connect_timeout
        )
        verified = None
        if route.smart_host is not None:
            ca = Path(route.ca_file) if route.ca_file else None
            verified = verified_client_context(host, ca)
            if route.implicit_tls:
                endpoint = wrapClientTLS(verified, endpoint)
        proto = ReplyReader(self.clock, self.settings.command_timeout)
        try:
            d: Deferred[ReplyReader] = connectProtocol(endpoint, proto)
            await d
        except Exception as e:
            raise SessionError("4.4.1", f"connect to {host}[{address}]:{route.port}: {e}") from e
        session = ClientSession(proto, host, self.helo)
        try:
            await session.greet()
            if route.smart_host is not None and not route.implicit_tls:
                if "STARTTLS" not in session.extensions:
                    raise SessionError("4.7.4", f"{host} offers no STARTTLS, which is required")
                await session.starttls(verified)
            elif route.smart_host is None and self._try_tls(session, address):
                try:
                    await session.starttls(opportunistic_client_context(), optional=True)
                except SessionError:
                    raise
                except Exception as e:
                    now = self.clock.seconds()
                    self.plaintext_until[address] = now + PLAINTEXT_AFTER_TLS_FAILURE
                    raise TLSFailed("4.7.5", f"TLS with {host}[{address}]: {_why(e)}") from e
            if route.username:
                password = Path(route.password_file).read_text().strip()
                await session.authenticate(route.username, password)
            return session
        except SessionError:
            proto.transport.abortConnection()  # type: ignore[union-attr]
            raise
        except Exception as e:  # connection lost, time-out, TLS handshake failure
            proto.transport.abortConnection()  # type: ignore[union-attr]
            raise SessionError("4.4.2", f"{host}[{address}]: {_why(e)}") from e

    def _try_tls(self, session: ClientSession, address: str) -> bool:
        if "STARTTLS" not in session.extensions:
            return False
        until = self.plaintext_until.get(address)
        if until is not None and until <= self.clock.seconds():
            del self.plaintext_until[address]
            until = None
        return until is None


def _why(e: Exception) -> str:
    return str(e) or type(e).__name__
