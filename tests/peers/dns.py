"""A real DNS server (``twisted.names``) on loopback, serving records the tests set.

The queue's resolver talks to it over UDP exactly as it would to a recursive resolver, so MX
preference, implicit MX, null MX and NXDOMAIN are exercised through the real client code.
Names not set are NXDOMAIN; a name with records of other types answers NOERROR with no data.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.names import dns, server
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError

#: A zone's records, silent names and negative TTL (TestZone.snapshot).
ZoneState = tuple[dict[tuple[str, int], list[object]], dict[str, frozenset[int]], int]


class TestZone(ResolverBase):
    """Records by (name, type); change them at any time with the set_* methods."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[tuple[str, int], list[object]] = {}
        #: Names whose queries go unanswered, but for the types named (see set_silent).
        self.silent: dict[str, frozenset[int]] = {}
        #: When positive: "no data" answers carry an SOA whose MINIMUM is this many seconds,
        #: as a real zone's do, so resolvers may keep them (RFC 2308 §5).
        self.negative_ttl = 0

    def snapshot(self) -> ZoneState:
        """What is set now, for ``restore``."""
        return dict(self.records), dict(self.silent), self.negative_ttl

    def restore(self, state: ZoneState) -> None:
        """Back to a ``snapshot``: what a test module set does not reach the next module."""
        records, silent, self.negative_ttl = state
        self.records, self.silent = dict(records), dict(silent)

    def clear(self, name: str) -> None:
        for key in [k for k in self.records if k[0] == name.lower()]:
            del self.records[key]
        self.silent.pop(name.lower(), None)

    def set_silent(self, name: str, *answered: int) -> None:
        """Never answer queries for ``name`` (a server that times out), except those of the
        types in ``answered``."""
        self.silent[name.lower()] = frozenset(answered)

    def set_mx(self, domain: str, hosts: Sequence[tuple[int, str]]) -> None:
        self.records[(domain.lower(), dns.MX)] = [
            dns.Record_MX(p, b"" if h == "." else h, ttl=0) for p, h in hosts
        ]

    def set_address(self, name: str, *addresses: str, ttl: int = 0) -> None:
        v4 = [a for a in addresses if ":" not in a]
        v6 = [a for a in addresses if ":" in a]
        self.records[(name.lower(), dns.A)] = [dns.Record_A(a, ttl=ttl) for a in v4]
        self.records[(name.lower(), dns.AAAA)] = [dns.Record_AAAA(a, ttl=ttl) for a in v6]

    def set_txt(self, name: str, *texts: str | bytes | Sequence[str | bytes], ttl: int = 0) -> None:
        """TXT records; a record given as a sequence is several strings (RFC 7208 §3.3).
        ``ttl``: how long resolvers may cache them (0, the default: ask every time)."""

        def strings(t: str | bytes | Sequence[str | bytes]) -> list[bytes]:
            parts = [t] if isinstance(t, str | bytes) else list(t)
            return [p if isinstance(p, bytes) else p.encode() for p in parts]

        self.records[(name.lower(), dns.TXT)] = [
            dns.Record_TXT(*strings(t), ttl=ttl) for t in texts
        ]

    def set_records(self, name: str, type: int, *payloads: object) -> None:
        """Any record type, as ``twisted.names.dns.Record_*`` payloads."""
        self.records[(name.lower(), type)] = list(payloads)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        text = name.decode().lower().rstrip(".")
        if text in self.silent and type not in self.silent[text]:
            return defer.Deferred()  # never fires: the client times out
        if not any(key[0] == text for key in self.records):
            return defer.fail(DNSNameError(text))
        answers = self._answers(text, cls, type)
        if not answers and type != dns.CNAME:
            # An alias: the CNAME and what its target has (one level, RFC 1034 §3.6.2).
            for alias in self.records.get((text, dns.CNAME), []):
                answers.append(dns.RRHeader(text, dns.CNAME, cls, 0, alias, auth=True))
                target = alias.name.name.decode().lower().rstrip(".")  # type: ignore[attr-defined]
                answers += self._answers(target, cls, dns.CNAME) + self._answers(target, cls, type)
        authority = []
        if not answers and self.negative_ttl > 0:
            soa = dns.Record_SOA(b"ns.test", b"root.test", minimum=self.negative_ttl)
            authority.append(dns.RRHeader(text, dns.SOA, cls, self.negative_ttl, soa, auth=True))
        return defer.succeed((answers, authority, []))

    def _answers(self, text: str, cls: int, type: int) -> list[dns.RRHeader]:
        return [
            dns.RRHeader(text, type, cls, payload.ttl or 0, payload, auth=True)  # type: ignore[attr-defined]
            for payload in self.records.get((text, type), [])
        ]


class TruncatingDatagramProtocol(dns.DNSDatagramProtocol):
    """UDP answers longer than ``limit`` octets go out with no records and the TC bit set, as
    a real server does when the RRset does not fit (RFC 1035 §4.2.1, RFC 2181 §9): the client
    must ask again over TCP.  (twisted.names' own server never truncates.)"""

    def __init__(self, controller: server.DNSServerFactory, limit: int) -> None:
        super().__init__(controller)
        self.limit = limit

    def writeMessage(self, message: dns.Message, address: object) -> None:
        if len(message.toStr()) > self.limit:
            message.answers, message.authority, message.additional = [], [], []
            message.trunc = 1
        super().writeMessage(message, address)


def _udp(factory: server.DNSServerFactory, truncate_at: int | None) -> dns.DNSDatagramProtocol:
    if truncate_at is None:
        return dns.DNSDatagramProtocol(factory)
    return TruncatingDatagramProtocol(factory, truncate_at)


def start(zone: TestZone, truncate_at: int | None = None) -> tuple[IListeningPort, int]:
    """Serve ``zone`` over UDP on 127.0.0.1 (answers over ``truncate_at`` octets truncated);
    call in the reactor thread."""
    from twisted.internet import reactor

    factory = server.DNSServerFactory(authorities=[zone])
    port = reactor.listenUDP(0, _udp(factory, truncate_at), interface="127.0.0.1")
    return port, port.getHost().port


def start_udp_tcp(
    zone: TestZone, truncate_at: int | None = None
) -> tuple[list[IListeningPort], int]:
    """Serve ``zone`` over UDP and TCP on the same 127.0.0.1 port (with ``truncate_at``,
    e.g. 512, answers too big for UDP are truncated there and asked again over TCP, RFC 1035
    §4.2); call in the reactor thread."""
    from twisted.internet import reactor

    factory = server.DNSServerFactory(authorities=[zone])
    for _ in range(20):
        udp = reactor.listenUDP(0, _udp(factory, truncate_at), interface="127.0.0.1")
        number = udp.getHost().port
        try:
            tcp = reactor.listenTCP(number, factory, interface="127.0.0.1")
        except CannotListenError:  # (twisted's, not an OSError): the TCP port is taken
            udp.stopListening()
            continue
        return [udp, tcp], number
    raise RuntimeError("no port free for both UDP and TCP")


def free_port_on(*addresses: str) -> int:
    """A TCP port free on every one of ``addresses`` (so MX hosts can share the queue's port)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        try:
            for address in addresses:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                with socket.socket(family) as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")
