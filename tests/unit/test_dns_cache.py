"""The caching resolver of ourmail.net.dns: answers kept for their TTL, negative answers per
RFC 2308 §5, failures never kept, concurrent questions asked once, memory bounded."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSServerError
from twisted.python.failure import Failure

from ourmail.net.dns import CachingResolver, negative_ttl


class Upstream:
    """Answers the tests script; counts the questions, and holds them when asked to."""

    def __init__(self) -> None:
        self.asked: list[bytes] = []
        self.answer: Any = ([], [], [])
        self.held: list[defer.Deferred[Any]] = []
        self.hold = False

    def query(self, query: dns.Query, timeout: object = None) -> defer.Deferred[Any]:
        self.asked.append(query.name.name)
        if self.hold:
            d: defer.Deferred[Any] = defer.Deferred()
            self.held.append(d)
            return d
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)


def txt(name: str, text: bytes, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(name, dns.TXT, dns.IN, ttl, dns.Record_TXT(text, ttl=ttl))


def soa(ttl: int, minimum: int) -> dns.RRHeader:
    payload = dns.Record_SOA(b"ns.x.test", b"root.x.test", minimum=minimum, ttl=ttl)
    return dns.RRHeader(b"x.test", dns.SOA, dns.IN, ttl, payload)


def lookup(resolver: CachingResolver, name: str = "a.x.test") -> Any:
    results: list[Any] = []
    resolver.lookupText(name).addBoth(results.append)
    return results[0] if results else None


def test_an_answer_is_kept_for_its_ttl_and_its_ttl_counts_down() -> None:
    up, clock = Upstream(), task.Clock()
    up.answer = ([txt("a.x.test", b"v=spf1 -all", 60)], [], [])
    resolver = CachingResolver(up, clock)
    assert lookup(resolver)[0][0].payload.data == [b"v=spf1 -all"]
    clock.advance(20)
    again = lookup(resolver)
    assert len(up.asked) == 1 and again[0][0].ttl == 40
    assert lookup(resolver, "A.X.TEST.")[0][0].ttl == 40  # names are case-blind (RFC 4343)
    clock.advance(41)
    lookup(resolver)
    assert len(up.asked) == 2


def test_ttl_zero_is_asked_every_time() -> None:
    up = Upstream()
    up.answer = ([txt("a.x.test", b"x", 0)], [], [])
    resolver = CachingResolver(up, task.Clock())
    lookup(resolver)
    lookup(resolver)
    assert len(up.asked) == 2


def test_negative_answers_follow_rfc_2308() -> None:
    up, clock = Upstream(), task.Clock()
    resolver = CachingResolver(up, clock)
    # No data, with an SOA: kept for min(SOA TTL, MINIMUM).
    up.answer = ([], [soa(300, 30)], [])
    assert lookup(resolver)[0] == []
    clock.advance(29)
    lookup(resolver)
    assert len(up.asked) == 1
    clock.advance(2)
    # NXDOMAIN with an SOA in the message: kept too, and given as NXDOMAIN again.
    message = dns.Message(rCode=dns.ENAME)
    message.authority = [soa(60, 600)]
    up.answer = DNSNameError(message)
    first, second = lookup(resolver), lookup(resolver)
    assert isinstance(first, Failure) and first.check(DNSNameError)
    assert isinstance(second, Failure) and second.check(DNSNameError)
    assert len(up.asked) == 2
    # Without an SOA nothing negative is kept.
    up.answer = DNSNameError(dns.Message(rCode=dns.ENAME))
    lookup(resolver, "b.x.test").trap(DNSNameError)
    lookup(resolver, "b.x.test").trap(DNSNameError)
    assert up.asked.count(b"b.x.test") == 2


def test_failures_are_never_kept() -> None:
    up = Upstream()
    up.answer = DNSServerError(dns.Message(rCode=dns.ESERVER))
    resolver = CachingResolver(up, task.Clock())
    lookup(resolver).trap(DNSServerError)
    lookup(resolver).trap(DNSServerError)
    assert len(up.asked) == 2


def test_concurrent_questions_are_asked_once() -> None:
    up = Upstream()
    up.hold = True
    resolver = CachingResolver(up, task.Clock())
    results: list[Any] = []
    for _ in range(5):
        resolver.lookupText("a.x.test").addCallback(results.append)
    cancelled = resolver.lookupText("a.x.test")
    cancelled.cancel()  # a caller's time-out: the others still get the answer
    cancelled.addErrback(lambda f: f.trap(defer.CancelledError))
    assert len(up.asked) == 1
    up.held[0].callback(([txt("a.x.test", b"x", 60)], [], []))
    assert len(results) == 5 and all(r[0][0].payload.data == [b"x"] for r in results)


def test_memory_is_bounded() -> None:
    up = Upstream()
    up.answer = ([txt("a.x.test", b"x", 600)], [], [])
    resolver = CachingResolver(up, task.Clock(), size=3)
    for n in range(10):
        lookup(resolver, f"n{n}.x.test")
    lookup(resolver, "n0.x.test")
    assert len(up.asked) == 11


def test_no_answer_is_kept_beyond_max_ttl() -> None:
    up, clock = Upstream(), task.Clock()
    up.answer = ([txt("a.x.test", b"x", 10**9)], [], [])
    resolver = CachingResolver(up, clock, max_ttl=100)
    lookup(resolver)
    clock.advance(101)
    lookup(resolver)
    assert len(up.asked) == 2


def test_negative_ttl_reads_the_soa() -> None:
    assert negative_ttl(([], [soa(300, 30)])) == 30
    assert negative_ttl(([], [soa(10, 30)])) == 10
    assert negative_ttl(([], [])) == 0
