"""A real DNS server (``twisted.names``) on loopback, serving records the tests set.

The queue's resolver talks to it over UDP exactly as it would to a recursive resolver, so MX
preference, implicit MX, null MX and NXDOMAIN are exercised through the real client code.
Names not set are NXDOMAIN; a name with records of other types answers NOERROR with no data.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.names import dns, server
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError


class TestZone(ResolverBase):
    """Records by (name, type); change them at any time with the set_* methods."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[tuple[str, int], list[object]] = {}

    def clear(self, name: str) -> None:
        for key in [k for k in self.records if k[0] == name.lower()]:
            del self.records[key]

    def set_mx(self, domain: str, hosts: Sequence[tuple[int, str]]) -> None:
        self.records[(domain.lower(), dns.MX)] = [
            dns.Record_MX(p, b"" if h == "." else h, ttl=0) for p, h in hosts
        ]

    def set_address(self, name: str, *addresses: str) -> None:
        v4 = [a for a in addresses if ":" not in a]
        v6 = [a for a in addresses if ":" in a]
        self.records[(name.lower(), dns.A)] = [dns.Record_A(a, ttl=0) for a in v4]
        self.records[(name.lower(), dns.AAAA)] = [dns.Record_AAAA(a, ttl=0) for a in v6]

    def set_txt(self, name: str, *texts: str | Sequence[str]) -> None:
        """TXT records; a record given as a sequence is several strings (RFC 7208 §3.3)."""
        self.records[(name.lower(), dns.TXT)] = [
            dns.Record_TXT(*([t] if isinstance(t, str) else t), ttl=0)  # type: ignore[arg-type]
            for t in texts
        ]

    def set_records(self, name: str, type: int, *payloads: object) -> None:
        """Any record type, as ``twisted.names.dns.Record_*`` payloads."""
        self.records[(name.lower(), type)] = list(payloads)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        text = name.decode().lower().rstrip(".")
        if not any(key[0] == text for key in self.records):
            return defer.fail(DNSNameError(text))
        answers = [
            dns.RRHeader(text, type, cls, 0, payload, auth=True)
            for payload in self.records.get((text, type), [])
        ]
        return defer.succeed((answers, [], []))


def start(zone: TestZone) -> tuple[IListeningPort, int]:
    """Serve ``zone`` over UDP on 127.0.0.1; call in the reactor thread."""
    from twisted.internet import reactor

    factory = server.DNSServerFactory(authorities=[zone])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    return port, port.getHost().port


def start_udp_tcp(zone: TestZone) -> tuple[list[IListeningPort], int]:
    """Serve ``zone`` over UDP and TCP on the same 127.0.0.1 port (answers too big for UDP
    are truncated there and asked again over TCP, RFC 1035 §4.2); call in the reactor thread."""
    from twisted.internet import reactor

    factory = server.DNSServerFactory(authorities=[zone])
    for _ in range(20):
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        number = udp.getHost().port
        try:
            tcp = reactor.listenTCP(number, factory, interface="127.0.0.1")
        except OSError:
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
