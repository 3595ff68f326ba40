"""The resolver every lookup uses (``[dns] servers``): ``twisted.names``, never the blocking
system resolver, with answers kept in memory for their time to live.

Implementation notes (keep these true when changing this module):

* :class:`CachingResolver` answers a query it has seen from memory, at once (an already
  fired Deferred), until the answer's smallest TTL has passed (RFC 1035 §3.2.1; RFC 2181
  §5.2: an RRset has one TTL); the TTLs it hands out count down.  Concurrent queries for
  the same name and type share one question to the server.
* Negative answers (NXDOMAIN, and "no data") are kept as RFC 2308 §5 says: for the
  smaller of the SOA's TTL and its MINIMUM field, and not at all when the server sent no
  SOA.  Server failures, refusals and time-outs are never kept (the next query asks again).
* Memory is bounded: at most ``size`` answers (the least recently used go first), none kept
  longer than ``max_ttl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.names import client, common, dns, hosts, resolve
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.net.ttlcache import TTLCache

#: One answer: the answer, authority and additional sections.
Sections = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]

#: Answers kept at most; no answer is kept longer than a day, whatever its TTL says.
CACHE_SIZE = 20_000
MAX_TTL = 86_400


def negative_ttl(sections: Sequence[Sequence[dns.RRHeader]]) -> int:
    """RFC 2308 §5: how long a negative answer may be kept: the smaller of the SOA record's
    TTL and its MINIMUM, from the authority section; 0 when there is no SOA."""
    for rr in (r for section in sections for r in section):
        if rr.type == dns.SOA:
            return int(min(rr.ttl, cast(dns.Record_SOA, rr.payload).minimum))
    return 0


@implementer(IResolver)
class CachingResolver(common.ResolverBase):
    """Asks ``upstream`` (any IResolver) once per name and type for as long as the answer
    lives (see the module's notes)."""

    def __init__(
        self,
        upstream: IResolver,
        clock: IReactorTime,
        size: int = CACHE_SIZE,
        max_ttl: int = MAX_TTL,
    ) -> None:
        common.ResolverBase.__init__(self)  # type: ignore[no-untyped-call]
        self._upstream = upstream
        self._clock = clock
        self._max_ttl = max_ttl
        #: (name, class, type) -> (when it was stored, the sections, or None for NXDOMAIN).
        self._cache: TTLCache[tuple[bytes, int, int], tuple[float, Any]] = TTLCache(size)
        self._asking: dict[tuple[bytes, int, int], list[defer.Deferred[Sections]]] = {}
        #: Questions sent upstream (for tests and the benchmarks).
        self.asked = 0

    def _lookup(
        self, name: bytes, cls: int, type: int, timeout: Sequence[int] | None
    ) -> defer.Deferred[Sections]:
        key = (name.lower().rstrip(b"."), cls, type)
        now = self._clock.seconds()
        found, entry = self._cache.get(key, now)
        if found:
            assert entry is not None
            stored, sections = entry
            if sections is None:
                return defer.fail(DNSNameError(name.decode("ascii", "replace")))
            return defer.succeed(_aged(sections, int(now - stored)))
        waiting: defer.Deferred[Sections] = defer.Deferred()
        if key in self._asking:
            self._asking[key].append(waiting)
            return waiting
        self._asking[key] = [waiting]
        self.asked += 1
        asked = self._upstream.query(dns.Query(name, type, cls), timeout)  # type: ignore[arg-type]
        asked.addCallbacks(self._answered, self._failed, callbackArgs=(key,), errbackArgs=(key,))
        return waiting

    def _answered(self, sections: Sections, key: tuple[bytes, int, int]) -> None:
        answers = sections[0]
        # No data (RFC 2308 §2.2) lives as long as the SOA says.
        ttl = min(rr.ttl for rr in answers) if answers else negative_ttl(sections)
        self._keep(key, sections, ttl)
        for d in self._asking.pop(key, []):
            if not d.called:  # (one that a caller's time-out cancelled)
                d.callback(_aged(sections, 0))

    def _failed(self, failure: Failure, key: tuple[bytes, int, int]) -> None:
        if failure.check(DNSNameError):  # type: ignore[no-untyped-call]
            args = getattr(failure.value, "args", ())
            message = args[0] if args else None
            if isinstance(message, dns.Message):
                self._keep(key, None, negative_ttl((message.authority,)))
        for d in self._asking.pop(key, []):
            if not d.called:
                d.errback(failure)

    def _keep(self, key: tuple[bytes, int, int], sections: Sections | None, ttl: int) -> None:
        now = self._clock.seconds()
        self._cache.put(key, (now, sections), min(ttl, self._max_ttl), now)


def _aged(sections: Sections, age: int) -> Sections:
    """Fresh lists of the records, their TTLs counted down by ``age`` seconds."""
    if age <= 0:
        return (list(sections[0]), list(sections[1]), list(sections[2]))

    def older(rr: dns.RRHeader) -> dns.RRHeader:
        aged = dns.RRHeader(rr.name.name, rr.type, rr.cls, max(rr.ttl - age, 0), rr.payload)
        aged.auth = rr.auth
        return aged

    return ([older(r) for r in sections[0]], [older(r) for r in sections[1]],
            [older(r) for r in sections[2]])  # fmt: skip


def make_resolver(servers: Sequence[str], clock: IReactorTime | None = None) -> IResolver:
    """A caching resolver asking ``servers`` ("address:port"; IPv6 addresses in brackets), or
    those of /etc/resolv.conf when there are none; names in /etc/hosts answer A and AAAA
    queries first.

    Configured servers are the only ones asked: ``client.createResolver`` would also read
    /etc/resolv.conf and retry a query that timed out against the system's servers."""
    if clock is None:
        from twisted.internet import reactor

        clock = cast(IReactorTime, reactor)
    pairs = [s.rsplit(":", 1) for s in servers]
    if not pairs:
        upstream: IResolver = client.createResolver()  # type: ignore[no-untyped-call]
    else:
        asked = client.Resolver(  # type: ignore[no-untyped-call]
            resolv=None, servers=[(host.strip("[]"), int(port)) for host, port in pairs]
        )
        # ttl=0: what /etc/hosts says is read afresh, never kept.
        local = hosts.Resolver(b"/etc/hosts", ttl=0)  # type: ignore[no-untyped-call]
        upstream = resolve.ResolverChain([local, asked])  # type: ignore[no-untyped-call]
    return CachingResolver(upstream, clock)
