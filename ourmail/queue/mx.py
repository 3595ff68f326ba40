"""Where mail for a domain goes: MX lookup with ``twisted.names`` (RFC 5321 §5.1).

* The MX records are tried in preference order, equal preferences in random order.
* A domain without MX records has an implicit MX: the domain itself, if it has an address.
* A "null MX" (one MX of preference 0 naming ".", RFC 7505) means the domain takes no mail:
  a permanent failure, as is a domain that does not exist (NXDOMAIN).
* Any other DNS trouble (time-out, SERVFAIL) is temporary: the message stays queued.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence

from twisted.internet.defer import DeferredList
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names.error import DNSNameError


class RouteError(Exception):
    """No usable mail host; ``status`` is the RFC 3463 code to report."""

    def __init__(self, status: str, diagnostic: str) -> None:
        super().__init__(f"{status} {diagnostic}")
        self.status = status
        self.diagnostic = diagnostic

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")


class MXResolver:
    """Looks up mail hosts and their addresses through one ``IResolver``."""

    def __init__(self, resolver: IResolver) -> None:
        self.resolver = resolver

    async def mail_hosts(self, domain: str) -> list[str]:
        """Host names to try for ``domain``, best first."""
        try:
            answers, _, _ = await self.resolver.lookupMailExchange(domain)
        except DNSNameError:
            raise RouteError("5.1.2", f"Domain {domain} does not exist") from None
        except Exception as e:
            raise RouteError("4.4.3", f"DNS lookup of MX for {domain} failed: {e}") from None
        records = [(a.payload.preference, str(a.payload.name)) for a in answers if a.type == dns.MX]
        if not records:
            return [domain]  # RFC 5321 §5.1: the implicit MX
        if len(records) == 1 and records[0][1] in ("", "."):
            raise RouteError("5.1.10", f"Domain {domain} accepts no mail (null MX)")  # RFC 7505
        random.shuffle(records)
        records.sort(key=lambda r: r[0])
        return [name for _, name in records if name not in ("", ".")]

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host``; empty if it has none."""
        results: Sequence[tuple[bool, object]] = await DeferredList(
            [self.resolver.lookupAddress(host), self.resolver.lookupIPV6Address(host)],
            consumeErrors=True,
        )
        found: list[str] = []
        for ok, value in results:
            if not ok:
                continue
            answers = value[0]  # type: ignore[index]
            for a in answers:
                if a.type in (dns.A, dns.AAAA):
                    found.append(a.payload.dottedQuad() if a.type == dns.A else _ipv6(a.payload))
        return list(dict.fromkeys(found))


def _ipv6(payload: dns.Record_AAAA) -> str:
    return socket.inet_ntop(socket.AF_INET6, payload.address)
