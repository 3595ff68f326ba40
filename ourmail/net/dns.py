"""The resolver every lookup uses (``[dns] servers``): ``twisted.names``, never the blocking
system resolver."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IResolver
from twisted.names import client


def make_resolver(servers: Sequence[str]) -> IResolver:
    """A caching resolver asking ``servers`` ("address:port"; IPv6 addresses in brackets), or
    those of /etc/resolv.conf when there are none."""
    pairs = [s.rsplit(":", 1) for s in servers]
    resolver: IResolver = client.createResolver(
        servers=[(host.strip("[]"), int(port)) for host, port in pairs] or None
    )
    return resolver
