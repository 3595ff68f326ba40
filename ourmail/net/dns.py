"""The resolver every lookup uses (``[dns] servers``): ``twisted.names``, never the blocking
system resolver."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IResolver
from twisted.names import cache, client, hosts, resolve


def make_resolver(servers: Sequence[str]) -> IResolver:
    """A caching resolver asking ``servers`` ("address:port"; IPv6 addresses in brackets)
    and only them, or those of /etc/resolv.conf when there are none."""
    pairs = [s.rsplit(":", 1) for s in servers]
    if not pairs:
        resolver: IResolver = client.createResolver()
        return resolver
    # client.createResolver would also ask the resolv.conf servers (round robin with
    # ``servers``), so a configured resolver that does not answer fell through to them.
    upstream = client.Resolver(servers=[(host.strip("[]"), int(port)) for host, port in pairs])
    return resolve.ResolverChain([hosts.Resolver(b"/etc/hosts"), cache.CacheResolver(), upstream])  # type: ignore[no-any-return]
