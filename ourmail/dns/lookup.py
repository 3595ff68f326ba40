"""Asynchronous DNS queries for the check (``twisted.names``, never the blocking system
resolver), each answer classified so the check can say exactly what is wrong.

Implementation notes:

* NXDOMAIN (the name does not exist, RFC 1035 §4.1.1 RCODE 3) and "no data" (the name
  exists but has no record of the type, RFC 2308 §2.2) are different outcomes; so are a
  time-out, a server failure (SERVFAIL) and a refusal.
* CNAMEs are followed (RFC 1034 §3.6.2), from the answer itself and, when a server gives
  only the alias, by asking again for its target; at most :data:`MAX_ALIASES` of them.  The
  aliases met are returned, so the check can tell when a name that must not be an alias is
  one (an MX or SRV target, RFC 2181 §10.3).
* Nothing is cached: a check shows DNS as it is now.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import attrs
from twisted.internet import defer
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IResolver
from twisted.names import client, dns, error

#: CNAMEs followed at most for one query.
MAX_ALIASES = 8
#: Seconds to wait for each try (one try per value): 2 s, then 4 s more.
DEFAULT_TIMEOUT = (2, 4)

#: A response's answer, authority and additional sections.
Sections = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]
Outcome = Literal["ok", "nxdomain", "nodata", "timeout", "servfail", "refused", "error"]

#: Record type names the check asks for.
TYPES = {
    "A": dns.A,
    "AAAA": dns.AAAA,
    "MX": dns.MX,
    "TXT": dns.TXT,
    "SRV": dns.SRV,
    "CNAME": dns.CNAME,
    "PTR": dns.PTR,
}


@attrs.frozen
class Answer:
    """What DNS says about one name and type."""

    outcome: Outcome
    #: The records of the type asked for, at the end of any alias chain
    #: (``twisted.names.dns.Record_*`` payloads).
    records: tuple[Any, ...] = ()
    #: The names that were aliases, in the order followed (the first is the name asked).
    aliases: tuple[str, ...] = ()
    #: The name the records belong to (the last alias's target, or the name asked).
    final: str = ""

    def describe(self, name: str, type: str) -> str:
        """Why there is no answer, in a few words."""
        where = f"{name} {type}"
        if self.final and self.final != name:
            where += f" (an alias of {self.final})"
        return {
            "nxdomain": f"{self.final or name} does not exist (NXDOMAIN)",
            "nodata": f"no {type} record at {where}",
            "timeout": f"no answer for {where}: the DNS server did not reply in time",
            "servfail": f"the DNS server failed on {where} (SERVFAIL)",
            "refused": f"the DNS server refused to answer for {where}",
            "error": f"the DNS server gave an error for {where}",
            "ok": f"{where} found",
        }[self.outcome]


def make_resolver(servers: Sequence[str] = ()) -> IResolver:
    """A resolver asking ``servers`` (``host:port``, an IPv6 address in brackets), else
    those of ``/etc/resolv.conf``.  ``/etc/hosts`` is not read: the check must see what the
    world sees.  A resolver reading ``/etc/resolv.conf`` looks at it again every minute: make
    one and keep it."""
    pairs = []
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{server!r} is not HOST:PORT")
        pairs.append((host.strip("[]"), int(port)))
    if not pairs:
        return client.Resolver(resolv=b"/etc/resolv.conf")  # type: ignore[no-untyped-call]
    return client.Resolver(resolv=None, servers=pairs)  # type: ignore[no-untyped-call]


class Lookup:
    """Queries through ``resolver``, each try waiting ``timeout`` seconds (a sequence: one
    value per try)."""

    def __init__(self, resolver: IResolver, timeout: Sequence[int | float] = DEFAULT_TIMEOUT):
        self.resolver = resolver
        self.timeout = tuple(timeout)

    async def query(self, name: str, type: str) -> Answer:
        """The records of ``type`` (a key of :data:`TYPES`) at ``name``, aliases followed
        (except when the CNAME itself is asked for)."""
        wanted = TYPES[type]
        asked, aliases = name.lower().rstrip("."), list[str]()
        for _ in range(MAX_ALIASES + 1):
            outcome, answers = await self._ask(asked, wanted)
            if outcome != "ok":
                return Answer(outcome, aliases=tuple(aliases), final=asked)
            target = asked
            cnames = {
                _name(rr.name): _name(cast(dns.Record_CNAME, rr.payload).name)
                for rr in answers
                if rr.type == dns.CNAME
            }
            while wanted != dns.CNAME and target in cnames and len(aliases) < MAX_ALIASES:
                aliases.append(target)
                target = cnames.pop(target)
            found = tuple(
                rr.payload for rr in answers if rr.type == wanted and _name(rr.name) == target
            )
            if found:
                return Answer("ok", found, tuple(aliases), target)
            if target == asked:
                return Answer("nodata", aliases=tuple(aliases), final=target)
            asked = target  # the server gave the alias only: ask for its target
        return Answer("error", aliases=tuple(aliases), final=asked)

    async def _ask(self, name: str, type: int) -> tuple[Outcome, list[dns.RRHeader]]:
        query = dns.Query(name.encode("ascii"), type, dns.IN)
        try:
            sections = await self.resolver.query(query, self.timeout)  # type: ignore[arg-type]
        except error.DNSNameError:
            return "nxdomain", []
        except defer.TimeoutError:  # DNSQueryTimeoutError is one
            return "timeout", []
        except error.DNSServerError:
            return "servfail", []
        except error.DNSQueryRefusedError:
            return "refused", []
        except (error.DomainError, ConnectError):  # e.g. no TCP server after a truncation
            return "error", []
        return "ok", list(cast(Sections, sections)[0])


def _name(name: dns.Name | None) -> str:
    """A name as text: lower case, without the final dot."""
    if name is None:
        return ""
    return name.name.decode("ascii", "replace").lower().rstrip(".")
