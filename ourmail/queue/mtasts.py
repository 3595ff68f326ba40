"""MTA-STS (RFC 8461): which MX hosts of a domain may get its mail, and only over verified TLS.

* ``_mta-sts.<domain>`` TXT (§3.1) says a policy exists and names its ``id``; the policy itself
  is fetched from ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (§3.3) with the
  certificate checked against the system's roots (or ``[queue] mta_sts_ca_file``), without
  following redirects, within ``mta_sts_timeout`` seconds and at most 64 KiB.
* A policy is cached durably under ``<data>/queue/mta-sts/`` for its ``max_age``, and fetched
  again only when the TXT ``id`` changes (§5.1); when the TXT record is gone or DNS fails, the
  cached policy is used until it expires (§5.1, §10.3).
* A policy that cannot be fetched or parsed is treated as no policy (§3.2, §5) and logged; the
  reason is kept for the TLS-RPT report (RFC 8460 §4.3.1).

The host name ``mta-sts.<domain>`` is looked up with ``twisted.names`` like every other name,
and the HTTPS request is made with ``twisted.web``'s ``Agent`` to that address.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from ourmail.fsutil import write_atomic
from ourmail.net.tls import trust_root, verified_client_context
from ourmail.queue.mx import MXResolver

log = Logger()

#: RFC 8461 §3.2: a policy body larger than this is not a policy.
MAX_POLICY_SIZE = 64 * 1024
#: §3.2: max_age is at most a year (31557600 s).
MAX_MAX_AGE = 31557600
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_MX_PATTERN = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z0-9-]+$")

_DONE = Failure(ResponseDone())

Mode = Literal["enforce", "testing", "none"]


class PolicyError(Exception):
    """The policy could not be fetched (``fetch``) or is not a valid policy (``invalid``)."""

    def __init__(self, kind: Literal["fetch", "invalid", "webpki"], why: str) -> None:
        super().__init__(why)
        self.kind = kind


@attrs.frozen
class Policy:
    """One domain's MTA-STS policy (§3.2), with the TXT ``id`` it was fetched under."""

    domain: str
    id: str
    mode: Mode
    mx: tuple[str, ...]
    max_age: int
    #: The policy's lines, as the TLS-RPT report quotes them (RFC 8460 §4.4 policy-string).
    lines: tuple[str, ...]
    fetched: float = 0.0

    @property
    def expires(self) -> float:
        return self.fetched + self.max_age

    def matches(self, host: str) -> bool:
        """§4.1: an MX host name matches a pattern exactly, or "*." and one more label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, dot, rest = host.partition(".")
                if dot and label and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_txt(texts: Sequence[str]) -> str | None:
    """The ``id`` of the one ``v=STSv1`` TXT record among ``texts`` (§3.1), else None."""
    found = [t for t in texts if t.startswith("v=STSv1")]
    if len(found) != 1:
        return None  # none, or several: as if there were none
    fields = {}
    for field in found[0].split(";"):
        key, eq, value = field.strip().partition("=")
        if eq:
            fields[key.strip()] = value.strip()
    if fields.get("v") != "STSv1" or not _ID.match(fields.get("id", "")):
        return None
    return fields["id"]


def parse_policy(domain: str, txt_id: str, body: bytes, now: float) -> Policy:
    """§3.2: ``key: value`` lines; version, mode, max_age and (but for "none") mx required."""
    if len(body) > MAX_POLICY_SIZE:
        raise PolicyError("invalid", f"policy of {len(body)} bytes is too large")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise PolicyError("invalid", "policy is not ASCII text") from None
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    fields: dict[str, list[str]] = {}
    for line in lines:
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError("invalid", f"policy line {line[:60]!r} is not key: value")
        fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("invalid", "policy version is not STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError("invalid", f"policy mode {mode!r} is not enforce, testing or none")
    age = (fields.get("max_age") or [""])[0]
    if not age.isdigit() or len(age) > 10:
        raise PolicyError("invalid", f"policy max_age {age!r} is not a number")
    mx = tuple(m.lower().rstrip(".") for m in fields.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError("invalid", "policy names no mx")
    if not all(_MX_PATTERN.match(m) for m in mx):
        raise PolicyError("invalid", "policy has a malformed mx pattern")
    return Policy(domain, txt_id, mode, mx, min(int(age), MAX_MAX_AGE), tuple(lines), now)  # type: ignore[arg-type]


class _Body(Protocol):
    """Collects a response body up to ``limit`` bytes; more is an error, not a truncation."""

    def __init__(self, limit: int, done: Deferred[bytes]) -> None:
        self.limit, self.done = limit, done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self.transport.stopProducing()  # type: ignore[union-attr]
            if not self.done.called:
                self.done.errback(PolicyError("invalid", f"policy over {self.limit} bytes"))
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(PolicyError("fetch", f"policy body: {reason.getErrorMessage()}"))


@implementer(IAgentEndpointFactory)
class ToAddress:
    """Agent endpoints: the host name's TLS, to an address found with twisted.names."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint

    def endpointForURI(self, uri: object) -> IStreamClientEndpoint:
        return self.endpoint


class PolicyStore:
    """Fetches, checks and caches the policies of destination domains."""

    def __init__(
        self,
        directory: Path,
        mx: MXResolver,
        reactor: IReactorTCP,
        clock: IReactorTime,
        port: int = 443,
        ca_file: str = "",
        timeout: float = 60,
    ) -> None:
        self.directory = directory
        self.mx = mx
        self.reactor = reactor
        self.clock = clock
        self.port = port
        #: What policy servers' and MX hosts' certificates must chain to (loaded once, at
        #: start-up, so a bad ``mta_sts_ca_file`` stops the server with the reason).
        self.trust = trust_root(Path(ca_file) if ca_file else None)
        self.timeout = timeout
        self._cache: dict[str, Policy | None] = {}
        #: Lookups under way, so that connections to one domain at once share one fetch.
        self._pending: dict[str, list[Deferred[Policy | None]]] = {}
        #: Why the last attempt for a domain found no usable policy (for TLS-RPT), if it did not.
        self.failures: dict[str, PolicyError] = {}

    def policy(self, domain: str) -> Deferred[Policy | None]:
        """The policy in force for ``domain`` (mode "none" included), or None if it has none."""
        waiter: Deferred[Policy | None] = Deferred()
        waiting = self._pending.get(domain)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        self._pending[domain] = [waiter]
        Deferred.fromCoroutine(self._policy(domain)).addBoth(self._settled, domain)
        return waiter

    def _settled(self, result: object, domain: str) -> None:
        for waiter in self._pending.pop(domain):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)  # type: ignore[arg-type]

    async def _policy(self, domain: str) -> Policy | None:
        now = self.clock.seconds()
        cached = await self._cached(domain)
        if cached is not None and cached.expires <= now:
            cached = None
        self.failures.pop(domain, None)
        try:
            txt_id = await self._txt_id(domain)
        except Exception as e:  # DNS trouble: keep what we know (§5.1)
            log.info("mta-sts: TXT of {domain}: {why}; cached policy kept", domain=domain, why=e)
            return cached
        if txt_id is None or (cached is not None and cached.id == txt_id):
            return cached
        try:
            body = await self._fetch(domain)
            policy = parse_policy(domain, txt_id, body, now)
        except PolicyError as e:
            self.failures[domain] = e
            log.warn(
                "mta-sts: policy of {domain} not used ({kind}: {why})",
                domain=domain,
                kind=e.kind,
                why=str(e),
            )
            return cached
        log.info(
            "mta-sts: {domain} policy {id}: mode {mode}, mx {mx}, max_age {age}",
            domain=domain,
            id=txt_id,
            mode=policy.mode,
            mx=list(policy.mx),
            age=policy.max_age,
        )
        self._cache[domain] = policy
        await deferToThread(self._save, policy)
        return policy

    async def _txt_id(self, domain: str) -> str | None:
        try:
            answers, _, _ = await self.mx.resolver.lookupText(f"_mta-sts.{domain}")
        except DNSNameError:
            return None
        texts = [
            b"".join(a.payload.data).decode("utf-8", "replace")
            for a in answers
            if a.type == dns.TXT
        ]
        return parse_txt(texts)

    async def _fetch(self, domain: str) -> bytes:
        host = f"mta-sts.{domain}"
        try:
            addresses = await self.mx.addresses(host)
        except Exception as e:
            raise PolicyError("fetch", f"lookup of {host}: {e}") from None
        if not addresses:
            raise PolicyError("fetch", f"{host} has no address")
        address = addresses[0]
        kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        tcp = kind(self.reactor, address, self.port, timeout=self.timeout)
        tls = wrapClientTLS(verified_client_context(host, None, self.trust), tcp)  # type: ignore[arg-type]
        agent = Agent.usingEndpointFactory(self.reactor, ToAddress(tls))
        url = f"https://{host}/.well-known/mta-sts.txt"
        headers = Headers({b"User-Agent": [b"ourmail"]})
        request: Deferred[IResponse] = agent.request(b"GET", url.encode("ascii"), headers)
        request.addTimeout(self.timeout, self.clock)
        try:
            response = await request
        except Exception as e:
            kind_ = "webpki" if "certificate" in str(e).lower() or "verif" in str(e) else "fetch"
            raise PolicyError(kind_, f"GET {url}: {_why(e)}") from None  # type: ignore[arg-type]
        if response.code != 200:  # §3.3: no redirects followed; anything else is a failure
            response.deliverBody(Protocol())
            raise PolicyError("fetch", f"GET {url}: HTTP {response.code}")
        media = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if media.split(b";")[0].strip().lower() != b"text/plain":
            response.deliverBody(Protocol())
            raise PolicyError("invalid", f"GET {url}: media type {media!r}, not text/plain")
        if isinstance(response.length, int) and response.length > MAX_POLICY_SIZE:
            response.deliverBody(Protocol())
            raise PolicyError("invalid", f"policy of {response.length} bytes is too large")
        body: Deferred[bytes] = Deferred()
        response.deliverBody(_Body(MAX_POLICY_SIZE, body))
        body.addTimeout(self.timeout, self.clock)
        try:
            return await body
        except PolicyError:
            raise
        except Exception as e:
            raise PolicyError("fetch", f"GET {url}: {_why(e)}") from None

    # -- the durable cache ----------------------------------------------------------------

    def _path(self, domain: str) -> Path:
        return self.directory / f"{domain}.json"

    async def _cached(self, domain: str) -> Policy | None:
        if domain not in self._cache:
            self._cache[domain] = await deferToThread(self._load, domain)
        return self._cache[domain]

    def _load(self, domain: str) -> Policy | None:
        if not _SAFE_NAME.match(domain):
            return None
        try:
            data: dict[str, Any] = json.loads(self._path(domain).read_bytes())
            return Policy(
                domain=domain,
                id=data["id"],
                mode=data["mode"],
                mx=tuple(data["mx"]),
                max_age=int(data["max_age"]),
                lines=tuple(data["lines"]),
                fetched=float(data["fetched"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warn("mta-sts: cached policy of {domain} unreadable: {why}", domain=domain, why=e)
            return None

    def _save(self, policy: Policy) -> None:
        if not _SAFE_NAME.match(policy.domain):
            return  # not a file name: kept in memory only
        self.directory.mkdir(parents=True, exist_ok=True)
        data = attrs.asdict(policy)
        write_atomic(self._path(policy.domain), json.dumps(data).encode(), 0o640)


def _why(e: BaseException) -> str:
    reasons = getattr(e, "reasons", None)  # twisted.web's ResponseNeverReceived and friends
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(e) or type(e).__name__
