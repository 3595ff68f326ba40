"""DNS block and allow lists (DNSBL / DNSWL, RFC 5782), asked when a client connects.

Implementation notes (keep these true when changing this module):

* The client's address is looked up in every configured zone at once (RFC 5782 §2.1: the
  IPv4 octets reversed, §2.4: IPv6 as 32 reversed nibbles, prefixed to the zone), through
  the server's ``twisted.names`` resolver.  A zone lists the client when it answers with an
  A record in the zone's ``answers`` networks (default: any of 127.0.0.0/8 except
  127.0.0.1, which §5 forbids in a list, and 127.255.255.0/24, which large lists use to
  say "query refused", not "listed").
* Each listing zone adds its ``weight`` (negative for an allow list); when the sum reaches
  ``threshold`` the client is refused with ``554 5.7.1`` (RFC 5321 §3.1, RFC 3463 X.7.1)
  and the TXT record of the same name as its reason (§2.1), cut down to printable ASCII and
  a bounded length: the text came from someone else's DNS server.  With ``action = "junk"``
  the check runs at the end of DATA instead (a verdict at connect cannot file a message)
  and the message goes to the Junk folder.
* Answers, listed or not (NXDOMAIN, RFC 2308 §5: for the SOA's minimum when the server
  sends one), are cached for their TTL in a cache of bounded size.  A zone that does not
  answer within ``query_timeout`` or answers with an error counts as not listing the
  client; that is logged and not cached.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.filters.netlist import IPAddress, IPNetwork, client_ip, in_networks, parse_networks
from ourmail.filters.options import number, refuse_unknown
from ourmail.interfaces import (
    ACCEPT,
    AuthResult,
    FilterEnvironment,
    ICheck,
    ICheckFactory,
    MailContext,
    Stage,
    Verdict,
    refuse,
)
from ourmail.net.ttlcache import TTLCache

log = Logger()

#: RFC 5782 §5: 127.0.0.1 is never listed; 127.255.255.0/24 are the "error" answers of
#: Spamhaus and others (e.g. queries through a public resolver), not listings.
NOT_LISTINGS = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("127.255.255.0/24"))
LISTINGS = (ipaddress.ip_network("127.0.0.0/8"),)
#: The longest zone reason quoted in a reply (RFC 5321 §4.5.3.1.5 allows 512 octets a line).
MAX_REASON = 200
#: What is kept of an answer: this many records, this many octets of a TXT record.
MAX_RECORDS = 16
MAX_TXT = 1024
#: A zone name leaves room for 32 nibbles and their dots (RFC 1035 §2.3.4: 255 octets).
MAX_ZONE = 253 - 64
#: No answer is cached longer than this, whatever its TTL says.
MAX_TTL = 86400
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")
_ZONE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?:\.(?!-)[a-z0-9_-]{1,63})+$")
OPTIONS = {"zones", "threshold", "action", "query_timeout", "negative_ttl", "cache_size"}
OPTIONS |= {"skip_networks"}


@attrs.frozen
class Zone:
    """One configured list: its DNS zone, its weight, and the answers that mean "listed"."""

    zone: str
    weight: float = 1.0
    #: Empty: the RFC 5782 default (see the module notes).
    answers: tuple[IPNetwork, ...] = ()

    def lists(self, address: str) -> bool:
        """Whether the A record ``address`` means "listed" in this zone."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if self.answers:
            return in_networks(ip, self.answers)
        return in_networks(ip, LISTINGS) and not in_networks(ip, NOT_LISTINGS)


def query_name(ip: IPAddress, zone: str) -> str:
    """The name to look up for ``ip`` in ``zone``: reversed octets (RFC 5782 §2.1) or
    reversed nibbles (§2.4), e.g. ``2.0.0.127.zen.example``."""
    reverse = ip.reverse_pointer  # "4.3.2.1.in-addr.arpa" / "b.a.9.8....ip6.arpa"
    return f"{reverse.rsplit('.', 2)[0]}.{zone}"


def sanitise(text: str) -> str:
    """A zone's TXT reason fit for an SMTP reply: printable ASCII, one space between words,
    at most :data:`MAX_REASON` characters."""
    clean = " ".join(_NOT_PRINTABLE.sub(" ", text).split())
    return clean if len(clean) <= MAX_REASON else clean[: MAX_REASON - 3] + "..."


def _result(zone: Zone, codes: Sequence[str]) -> AuthResult:
    """An allow list's listing as RFC 8904 ``dnswl=pass dns.zone=... policy.ip=...``; a block
    list's the same way under ``dnsbl=fail`` (a method of ours: none is registered)."""
    code = next(c for c in codes if zone.lists(c))
    properties = (("dns.zone", zone.zone), ("policy.ip", code))
    if zone.weight < 0:
        return AuthResult("dnswl", "pass", properties=properties)
    return AuthResult("dnsbl", "fail", properties=properties)


def _negative_ttl(failure: Failure, default: float) -> float:
    """RFC 2308 §5: a negative answer lives for the smaller of its SOA's TTL and MINIMUM."""
    args = getattr(failure.value, "args", ())
    message = args[0] if args else None
    if isinstance(message, dns.Message):
        for rr in message.authority:
            if rr.type == dns.SOA:
                return float(min(rr.ttl, cast(dns.Record_SOA, rr.payload).minimum))
    return default


@implementer(ICheck)
class DNSBLCheck:
    """The DNSBL/DNSWL check (see the module notes)."""

    name = "dnsbl"

    def __init__(
        self,
        zones: Sequence[Zone],
        resolver: IResolver,
        clock: IReactorTime,
        threshold: float = 1.0,
        action: str = "reject",
        query_timeout: float = 5.0,
        negative_ttl: float = 300.0,
        cache_size: int = 10000,
        skip_networks: Sequence[IPNetwork] = (),
    ) -> None:
        self.zones = tuple(zones)
        self.stages: tuple[Stage, ...] = ("data",) if action == "junk" else ("connect",)
        #: Room for the A lookups and then the TXT reasons, each within query_timeout.
        self.timeout = 2 * query_timeout + 1
        self.on_error = "accept"
        self.trusted = False
        self.threshold = threshold
        self.action = action
        self.query_timeout = query_timeout
        self.negative_ttl = negative_ttl
        self.skip_networks = tuple(skip_networks)
        self._resolver = resolver
        self._clock = clock
        #: (name, type) -> the A addresses or TXT strings of a name (empty: none).
        self._cache: TTLCache[tuple[str, int], tuple[str, ...]] = TTLCache(cache_size)

    def check(self, stage: Stage, context: MailContext) -> Deferred[Verdict]:
        ip = client_ip(context.client_address)
        if ip is None or in_networks(ip, self.skip_networks):
            return defer.succeed(ACCEPT)
        return self._judge(ip, stage)

    @inlineCallbacks
    def _judge(self, ip: IPAddress, stage: Stage) -> Any:
        names = [query_name(ip, z.zone) for z in self.zones]
        answers = yield defer.gatherResults([self._lookup(n, dns.A) for n in names])
        listing = [
            (zone, name, codes)
            for zone, name, codes in zip(self.zones, names, answers, strict=True)
            if codes is not None and any(zone.lists(a) for a in codes)
        ]
        for zone, _, codes in listing:
            log.info(
                "dnsbl: {ip} listed by {zone} ({codes}, weight {weight})",
                ip=str(ip),
                zone=zone.zone,
                codes=", ".join(codes),
                weight=zone.weight,
            )
        score = sum(zone.weight for zone, _, _ in listing)
        # At connect there is no message yet to carry results (the session starts its
        # transaction afresh at MAIL): they are only given at data, in junk mode.
        results = tuple(_result(z, codes) for z, _, codes in listing if stage == "data")
        if score < self.threshold:
            return Verdict(results=results)
        # The threshold is positive, so some block list (positive weight) lists the client.
        zone, name, _ = next(entry for entry in listing if entry[0].weight > 0)
        if self.action == "junk":
            return Verdict("junk", results=results, reason=f"[{ip}] listed by {zone.zone}")
        texts = yield self._lookup(name, dns.TXT)
        reason = sanitise(" ".join(texts or ())) or "no reason given"
        text = f"Service unavailable; client [{ip}] listed by {zone.zone}: {reason}"
        verdict: Verdict = attrs.evolve(refuse(554, "5.7.1", text), results=results)
        return verdict

    def _lookup(self, name: str, rtype: int) -> Deferred[tuple[str, ...] | None]:
        """The A addresses or TXT strings of ``name`` (empty: none, None: no answer)."""
        now = self._clock.seconds()
        found, cached = self._cache.get((name, rtype), now)
        if found:
            return defer.succeed(cached)
        # Asked again after a second without an answer (a lost UDP datagram), as a stub
        # resolver does (RFC 1035 §4.2.1), within query_timeout in all.
        whole = math.ceil(self.query_timeout)
        timeout = (1, whole - 1) if whole > 1 else (whole,)
        if rtype == dns.A:
            d = self._resolver.lookupAddress(name, timeout)
        else:
            d = self._resolver.lookupText(name, timeout)
        d.addTimeout(self.query_timeout, self._clock)

        def answered(result: tuple[list[dns.RRHeader], Any, Any]) -> tuple[str, ...]:
            # Kept bounded whatever the zone sends: a few codes, the start of a reason.
            records = [rr for rr in result[0] if rr.type == rtype][:MAX_RECORDS]
            if rtype == dns.A:
                values = tuple(
                    str(ipaddress.IPv4Address(cast(dns.Record_A, rr.payload).address))
                    for rr in records
                )
            else:
                values = tuple(
                    b"".join(cast(dns.Record_TXT, rr.payload).data)[:MAX_TXT].decode("latin-1")
                    for rr in records
                )
            ttl = min((rr.ttl for rr in records), default=self.negative_ttl)
            self._cache.put((name, rtype), values, min(ttl, MAX_TTL), self._clock.seconds())
            return values

        def failed(failure: Failure) -> tuple[str, ...] | None:
            if isinstance(failure.value, DNSNameError):
                ttl = min(_negative_ttl(failure, self.negative_ttl), MAX_TTL)
                self._cache.put((name, rtype), (), ttl, self._clock.seconds())
                return ()
            log.warn(
                "dnsbl: no answer for {name} ({error}); counted as not listed",
                name=name,
                error=failure.getErrorMessage() or type(failure.value).__name__,
            )
            return None

        return d.addCallbacks(answered, failed)


def _zone(table: object) -> Zone:
    if not isinstance(table, Mapping):
        raise ValueError("each of 'zones' must be a table with 'zone' (and 'weight', 'answers')")
    unknown = set(table) - {"zone", "weight", "answers"}
    if unknown:
        raise ValueError(f"zones: unknown key {sorted(unknown)[0]!r}")
    zone = str(table.get("zone", "")).strip(".").lower()
    if not _ZONE.match(zone) or len(zone) > MAX_ZONE:
        raise ValueError(f"zones: {table.get('zone')!r} is not a DNS zone")
    weight = table.get("weight", 1)
    if not isinstance(weight, int | float) or isinstance(weight, bool):
        raise ValueError(f"zones: the weight of {zone} must be a number")
    answers = parse_networks(table.get("answers", ()), f"answers of {zone}")
    return Zone(zone, float(weight), answers)


@implementer(ICheckFactory)
class DNSBLFactory:
    """Builds the ``dnsbl`` check from ``[filters.check.dnsbl]`` (docs/filters.md)."""

    name = "dnsbl"

    def build(self, options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        refuse_unknown(options, OPTIONS)
        zones = options.get("zones")
        if not isinstance(zones, Sequence) or isinstance(zones, str) or not zones:
            raise ValueError("'zones' must list at least one zone (a dnsbl check without zones)")
        action = options.get("action", "reject")
        if action not in ("reject", "junk"):
            raise ValueError("'action' must be 'reject' or 'junk'")
        threshold = options.get("threshold", 1)
        if not isinstance(threshold, int | float) or isinstance(threshold, bool) or threshold <= 0:
            raise ValueError("'threshold' must be a positive number")
        size = options.get("cache_size", 10000)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("'cache_size' must be a whole number, 0 or more")
        return DNSBLCheck(
            [_zone(z) for z in zones],
            cast(IResolver, env.resolver),
            cast(IReactorTime, env.reactor),
            threshold=float(threshold),
            action=str(action),
            query_timeout=number(options, "query_timeout", 5.0, 0.1),
            negative_ttl=number(options, "negative_ttl", 300.0, 0),
            cache_size=size,
            skip_networks=parse_networks(options.get("skip_networks", ()), "skip_networks"),
        )


factory = DNSBLFactory()
