"""Opening an SMTP session to the next hop of a domain: its MX hosts, or the smart host.

MX delivery (RFC 5321 §5.1): hosts in preference order, each host's addresses in turn, until
one greets and answers EHLO.  STARTTLS is used whenever offered, without a certificate check
(opportunistic TLS, RFC 7435); when the handshake fails, the same host is tried again at once
in plaintext, and for an hour after that without TLS, as Postfix does at its "may" level.  A
smart host (``[queue.relay]``) must offer TLS with a certificate valid for its name; AUTH is
sent only over that TLS.

MTA-STS (RFC 8461 §4, §5): when the destination domain has a policy in ``enforce`` mode, only
MX hosts that match it are tried, each must offer STARTTLS and present a certificate valid for
its MX name (verified against the system's roots or ``mta_sts_ca_file``), and anything else
is a temporary failure: never plaintext, never an unverified certificate.  In ``testing`` mode
the same checks run, a failure is reported (TLS-RPT, RFC 8460) and the mail goes as without a
policy.  Every MX session's TLS outcome is recorded for the TLS-RPT reports.
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
from ourmail.queue.mtasts import Policy, PolicyStore
from ourmail.queue.mx import MXResolver, RouteError
from ourmail.queue.tlsrpt import Outcome, TLSReports

log = Logger()

#: At most this many MX hosts, and addresses per host, are tried per connection attempt.
MAX_HOSTS = 5
MAX_ADDRESSES = 2
#: Seconds an address whose TLS handshake failed is sent to in plaintext.
PLAINTEXT_AFTER_TLS_FAILURE = 3600


class TLSFailed(SessionError):
    """The opportunistic TLS handshake failed; the address is now tried in plaintext."""


class STSFailed(SessionError):
    """A session could not meet the MTA-STS policy; ``result_type`` as RFC 8460 §4.3 names it."""

    def __init__(self, result_type: str, status: str, diagnostic: str) -> None:
        super().__init__(status, diagnostic)
        self.result_type = result_type


#: RFC 8460 §4.3.1: the result type of a policy that could not be used.
_POLICY_FAILURES = {
    "fetch": "sts-policy-fetch-error",
    "invalid": "sts-policy-invalid",
    "webpki": "sts-webpki-invalid",
}


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
        sts: PolicyStore | None = None,
        reports: TLSReports | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.mx = mx
        self.settings = settings
        self.helo = helo
        #: MTA-STS policies of destination domains (None: not honoured).
        self.sts = sts
        #: Where TLS outcomes are recorded for TLS-RPT (None: nowhere).
        self.reports = reports
        #: Addresses whose TLS handshake failed, and until when they get plaintext.
        self.plaintext_until: dict[str, float] = {}

    async def open(self, route: Route) -> ClientSession:
        """A session to the first host of ``route`` that works; RouteError/SessionError if none."""
        policy = None
        if route.smart_host is not None:
            hosts = [route.smart_host]
        else:
            hosts = await self.mx.mail_hosts(route.domain)
            policy = await self._policy(route.domain)
            if policy is not None:
                hosts = self._sts_hosts(policy, hosts)
            hosts = hosts[:MAX_HOSTS]
        last: Exception = RouteError("4.4.4", f"No mail host for {route.domain}")
        for host in hosts:
            addresses = (await self.mx.addresses(host))[:MAX_ADDRESSES]
            if not addresses:
                last = RouteError("4.4.4", f"Host {host} has no address")
                continue
            for address in addresses:
                try:
                    return await self._attempt(route, host, address, policy)
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

    async def _policy(self, domain: str) -> Policy | None:
        """The MTA-STS policy that applies to ``domain`` ("none" mode is no policy)."""
        if self.sts is None:
            return None
        try:
            policy = await self.sts.policy(domain)
        except Exception as e:  # fail closed: the domain may have an enforced policy
            log.failure("queue: MTA-STS policy of {domain}", domain=domain)
            raise RouteError("4.4.3", f"MTA-STS policy lookup for {domain} failed: {e}") from e
        failure = self.sts.failures.get(domain)
        if failure is not None and policy is None:
            # The domain announces a policy (its TXT record) that we could not use.
            result = _POLICY_FAILURES[failure.kind]
            self._record(
                Outcome(domain, False, "sts", result_type=result, reason=str(failure)[:200])
            )
        return policy if policy is not None and policy.mode != "none" else None

    def _sts_hosts(self, policy: Policy, hosts: list[str]) -> list[str]:
        """RFC 8461 §4.1: enforce: only the MX hosts the policy lists; testing: all of them,
        a mismatch reported."""
        matching = [h for h in hosts if policy.matches(h)]
        for host in hosts:
            if host not in matching:
                log.warn(
                    "queue: MX {host} of {domain} is not in its MTA-STS policy ({mode})",
                    host=host,
                    domain=policy.domain,
                    mode=policy.mode,
                )
                self._record(
                    _outcome(policy, False, "validation-failure", host, reason="mx-mismatch")
                )
        if policy.mode != "enforce":
            return hosts
        if not matching:
            raise RouteError(
                "4.7.5", f"no MX host of {policy.domain} matches its MTA-STS policy (RFC 8461)"
            )
        return matching

    async def _attempt(
        self, route: Route, host: str, address: str, policy: Policy | None
    ) -> ClientSession:
        """One address: with verified TLS under a policy for this host, else opportunistic."""
        if policy is not None and policy.matches(host):
            try:
                session = await self._session(route, host, address, policy)
            except STSFailed as e:
                self._record(_outcome(policy, False, e.result_type, host, address, e.diagnostic))
                if policy.mode == "enforce":
                    raise
                log.warn("queue: {error}; MTA-STS testing mode, sending anyway", error=e)
            else:
                self._record(_outcome(policy, True, "", host, address, sending=session))
                return session
        try:
            session = await self._session(route, host, address)
        except TLSFailed as e:
            log.warn("queue: {error}; trying again without TLS", error=e)
            return await self._session(route, host, address)
        if policy is None and route.smart_host is None and session.tls:
            self._record(Outcome(route.domain, True))
        return session

    def _record(self, outcome: Outcome) -> None:
        if self.reports is not None:
            self.reports.record(outcome, self.clock.seconds())

    async def _session(
        self, route: Route, host: str, address: str, policy: Policy | None = None
    ) -> ClientSession:
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
            elif policy is not None:
                await self._sts_starttls(session, host, address)
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

    async def _sts_starttls(self, session: ClientSession, host: str, address: str) -> None:
        """RFC 8461 §4.2: STARTTLS with a certificate valid for the MX name, or STSFailed."""
        if "STARTTLS" not in session.extensions:
            raise STSFailed(
                "starttls-not-supported", "4.7.4", f"{host} offers no STARTTLS (MTA-STS)"
            )
        assert self.sts is not None  # a policy comes from it
        try:
            await session.starttls(verified_client_context(host, None, self.sts.trust))
        except SessionError as e:
            raise STSFailed("starttls-not-supported", "4.7.4", e.diagnostic) from e
        except Exception as e:
            why = _why(e)
            raise STSFailed(
                _certificate_failure(why), "4.7.5", f"TLS with {host}[{address}] (MTA-STS): {why}"
            ) from e

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


def _certificate_failure(why: str) -> str:
    """The RFC 8460 §4.3.2 result type that an OpenSSL or service_identity error names."""
    text = why.lower()
    if "mismatch" in text or "hostname" in text or "verificationerror" in text:
        return "certificate-host-mismatch"
    if "expired" in text:
        return "certificate-expired"
    if "self-signed" in text or "self signed" in text or "issuer" in text:
        return "certificate-not-trusted"
    return "validation-failure"


def _outcome(
    policy: Policy,
    ok: bool,
    result_type: str,
    host: str,
    address: str = "",
    reason: str = "",
    sending: ClientSession | None = None,
) -> Outcome:
    local = ""
    if sending is not None:
        local = getattr(sending.proto.transport.getHost(), "host", "")  # type: ignore[union-attr]
    return Outcome(
        policy.domain,
        ok,
        "sts",
        policy.lines,
        policy.mx,
        result_type,
        host,
        address,
        local,
        reason[:200],
    )
