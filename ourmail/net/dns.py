"""The resolver every lookup uses (``[dns] servers``): ``twisted.names``, never the blocking
system resolver."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IResolver
from twisted.names import cache, client, hosts, resolve


def make_resolver(servers: Sequence[str]) -> IResolver:
    """A caching resolver asking ``servers`` ("address:port"; IPv6 addresses in brackets), or
    those of /etc/resolv.conf when there are none.

    Configured servers are the only ones asked: ``client.createResolver`` would also read
    /etc/resolv.conf and retry a query that timed out against the system's servers."""
    pairs = [s.rsplit(":", 1) for s in servers]
    if not pairs:
        resolver: IResolver = client.createResolver()  # type: ignore[no-untyped-call]
        return resolver
    asked = client.Resolver(  # type: ignore[no-untyped-call]
        resolv=None, servers=[(host.strip("[]"), int(port)) for host, port in pairs]
    )
    chain: IResolver = resolve.ResolverChain(  # type: ignore[no-untyped-call]
        [hosts.Resolver(b"/etc/hosts"), cache.CacheResolver(), asked]  # type: ignore[no-untyped-call]
    )
    return chain
