"""Client addresses and network lists for the checks' options (``skip_networks``, answers)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(text: str) -> IPAddress | None:
    """The client's address, an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, a dual-stack
    listener's view of an IPv4 client) as the IPv4 address it is; None for no IP at all."""
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(value: object, option: str) -> tuple[IPNetwork, ...]:
    """A list of networks ("192.0.2.0/24", "2001:db8::/32", or single addresses) from the
    option ``option``; ValueError naming the option for anything else."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{option!r} must be a list of networks")
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError as e:
            raise ValueError(f"{option!r}: {item!r} is not a network ({e})") from e
    return tuple(networks)


def in_networks(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    """Whether ``address`` is in one of ``networks`` (of its own family)."""
    return any(address.version == n.version and address in n for n in networks)
