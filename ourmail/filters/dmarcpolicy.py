"""DMARC policy records and their discovery (RFC 7489 §6.3, §6.6.3), and the organisational
domain (§3.2) from the public suffix list that the ``publicsuffixlist`` package bundles
(offline: no list is fetched at run time)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import attrs
from publicsuffixlist import PublicSuffixList
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.names import dns, error

#: What a record may say in p= and sp= (RFC 7489 §6.3).
DISPOSITIONS = ("none", "quarantine", "reject")
#: A record longer than this is not a DMARC record anyone meant (DNS TXT answers are small).
MAX_RECORD = 4096
_SIZE = re.compile(r"^(\d+)([kmgt]?)$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """The organisational domain of ``domain`` (RFC 7489 §3.2): the public suffix plus one
    label; a public suffix itself is its own.  (Asked for every message: the last answers
    are kept.)"""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(a: str, b: str, strict: bool) -> bool:
    """Identifier alignment (RFC 7489 §3.1): equal domains (strict), or the same
    organisational domain (relaxed)."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if strict or a == b:
        return a == b
    return organizational_domain(a) == organizational_domain(b)


@attrs.frozen
class ReportURI:
    """One ``rua=`` destination: a mailto address and its size limit in bytes (0: none)."""

    address: str
    limit: int = 0

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@attrs.frozen
class Policy:
    """A parsed DMARC record (RFC 7489 §6.3) and where it was found."""

    domain: str
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[ReportURI, ...] = ()

    def disposition(self, from_domain: str) -> str:
        """The policy for mail whose ``From:`` domain is ``from_domain`` (RFC 7489 §6.3):
        ``sp=`` when this record was found at the organisational domain for a subdomain of
        it (``sp=`` defaults to ``p=``), else ``p=``."""
        own = from_domain.lower().rstrip(".") == self.domain.lower().rstrip(".")
        return self.p if own else self.sp

    def published(self) -> dict[str, Any]:
        """The ``policy_published`` values of an aggregate report (Appendix C)."""
        return {
            "domain": self.domain,
            "adkim": self.adkim,
            "aspf": self.aspf,
            "p": self.p,
            "sp": self.sp,
            "pct": self.pct,
        }


def parse_rua(value: str) -> tuple[ReportURI, ...]:
    """The mailto URIs of ``rua=`` (RFC 7489 §6.4: comma-separated, ``!size`` suffix);
    other schemes and malformed ones are skipped."""
    uris = []
    for part in value.split(","):
        uri, _, size = part.strip().partition("!")
        if not uri.lower().startswith("mailto:"):
            continue
        address = uri[len("mailto:") :].split("?", 1)[0]
        local, at, domain = address.rpartition("@")
        if not (local and at and domain) or any(c in address for c in " <>,;"):
            continue
        limit = 0
        if size:
            match = _SIZE.match(size)
            if not match:
                continue
            limit = int(match.group(1)) * _UNITS[match.group(2).lower()]
        uris.append(ReportURI(address, limit))
    return tuple(uris)


@functools.lru_cache(maxsize=1024)
def parse_record(text: str, domain: str) -> Policy | None:
    """``text`` as a DMARC record for ``domain``, or None if it is not a valid one (the
    last records parsed are kept: a Policy never changes).

    RFC 7489 §6.3: ``v=DMARC1`` first, then tags; unknown tags are ignored.  §6.6.3: an
    invalid or missing ``p=`` with a valid ``rua=`` is read as ``p=none``."""
    tags: dict[str, str] = {}
    parts = [t.strip() for t in text.split(";")]
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        return None
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), value.strip())
    rua = parse_rua(tags.get("rua", ""))
    p = tags.get("p", "").lower()
    if p not in DISPOSITIONS:
        if not rua:
            return None
        p = "none"
    sp = tags.get("sp", "").lower()
    adkim, aspf = tags.get("adkim", "r").lower(), tags.get("aspf", "r").lower()
    pct = tags.get("pct", "100")
    return Policy(
        domain=domain,
        p=p,
        sp=sp if sp in DISPOSITIONS else p,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        pct=min(int(pct), 100) if pct.isdigit() else 100,
        rua=rua,
    )


class PolicyLookupError(Exception):
    """A DNS failure (not an absence) during discovery: DMARC says temperror."""


def txt_records(
    resolver: Any, reactor: Any, name: str, timeout: float
) -> Deferred[list[str] | None]:
    """The TXT records at ``name`` (strings joined), None for NXDOMAIN or no TXT;
    PolicyLookupError for a time-out or server failure."""
    first = max(timeout / 3, 0.1)
    d = resolver.lookupText(name, timeout=(first, timeout - first))
    d.addTimeout(timeout, reactor)

    def found(answer: tuple[list[Any], Any, Any]) -> list[str] | None:
        records = [b"".join(r.payload.data) for r in answer[0] if r.type == dns.TXT]
        texts = [r.decode("utf-8", "replace") for r in records if len(r) <= MAX_RECORD]
        return texts or None

    def failed(failure: Any) -> list[str] | None:
        if failure.check(error.DNSNameError):
            return None
        raise PolicyLookupError(f"DNS {failure.type.__name__} for {name}")

    texts: Deferred[list[str] | None] = d.addCallbacks(found, failed)
    return texts


def _one_policy(texts: Sequence[str] | None, domain: str) -> Policy | None:
    """RFC 7489 §6.6.3 step 3-4: records not starting with v=DMARC1 are ignored; other than
    exactly one left means no policy at this level."""
    if not texts:
        return None
    candidates = [t for t in texts if t.replace(" ", "").startswith("v=DMARC1")]
    if len(candidates) != 1:
        return None
    return parse_record(candidates[0], domain)


async def discover(resolver: Any, reactor: Any, from_domain: str, timeout: float) -> Policy | None:
    """The policy for ``from_domain`` (RFC 7489 §6.6.3): ``_dmarc.<from-domain>``, then
    ``_dmarc.<organisational domain>``; None when neither has one."""
    texts = await txt_records(resolver, reactor, f"_dmarc.{from_domain}", timeout)
    policy = _one_policy(texts, from_domain)
    org = organizational_domain(from_domain)
    if policy is None and org != from_domain:
        texts = await txt_records(resolver, reactor, f"_dmarc.{org}", timeout)
        policy = _one_policy(texts, org)
    return policy


def verify_external(
    resolver: Any, reactor: Any, policy_domain: str, uri: ReportURI, timeout: float
) -> Deferred[bool]:
    """Whether ``uri``'s domain agrees to receive reports about ``policy_domain`` (RFC 7489
    §7.1): always when both have the same organisational domain, else only if
    ``<policy-domain>._report._dmarc.<rua-domain>`` has a ``v=DMARC1`` record."""
    if organizational_domain(uri.domain) == organizational_domain(policy_domain):
        return defer.succeed(True)
    name = f"{policy_domain}._report._dmarc.{uri.domain}"
    d = txt_records(resolver, reactor, name, timeout)

    def judged(texts: list[str] | None) -> bool:
        return any(t.replace(" ", "").startswith("v=DMARC1") for t in texts or ())

    return d.addCallbacks(judged, lambda _: False)
