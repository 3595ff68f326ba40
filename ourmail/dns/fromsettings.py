"""The :class:`~ourmail.dns.records.MailSetup` of a domain served here, from the Settings:
the host name, the ports the listeners are configured on, the DKIM keys under
``<data>/dkim`` (found as ``ourmail dkim`` finds them), ``[web] mta_sts_mode``, this
machine's interface addresses and ``[queue] relay``.

Reads the key files: blocking, so the web calls it in a thread (``deferToThread``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping

import psutil

from ourmail.config import Settings
from ourmail.dns.records import DkimPublic, MailSetup
from ourmail.preflight import parse_endpoint
from ourmail.secure.dkimkeys import KeyError_, KeyStore, Unreadable

#: The listeners whose ports the records name.
PUBLIC_SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "web")


def configured_ports(listen: Mapping[str, str | None]) -> dict[str, int]:
    """Listener -> the TCP port its endpoint string names (``tcp:993``, ``ssl:port=993``);
    listeners that are off, on unix sockets or on port 0 are left out."""
    ports = {}
    for service in PUBLIC_SERVICES:
        endpoint = listen.get(service)
        if not endpoint:
            continue
        try:
            kind, args, options = parse_endpoint(endpoint)
        except ValueError:
            continue
        text = options.get("port", args[0] if args else "")
        if kind in ("tcp", "tcp6", "ssl") and text.isdigit() and 0 < int(text) < 65536:
            ports[service] = int(text)
    return ports


def dkim_keys(
    settings: Settings, domain: str, unreadable: Callable[[Unreadable], None] | None = None
) -> tuple[DkimPublic, ...]:
    """The keys that sign for ``domain`` (retired ones are left out).  A key file that
    cannot be read raises :class:`~ourmail.secure.dkimkeys.KeyError_` (the commands print
    it), or, with ``unreadable``, is handed to it and left out (the console lists it)."""
    found = []
    for entry in KeyStore(settings.data_dir / "dkim").entries(domain):
        if isinstance(entry, Unreadable):
            if unreadable is None:
                raise KeyError_(entry.reason)
            unreadable(entry)
        elif entry.active:
            found.append(DkimPublic(entry.selector, entry.algorithm, entry.public_value()))
    return tuple(found)


def own_addresses() -> frozenset[str]:
    """The IPv4 and IPv6 addresses of this machine's interfaces (IPv6 without its zone)."""
    found = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                found.add(str(ipaddress.ip_address(entry.address.split("%", 1)[0])))
    return frozenset(found)


def mail_setup(
    settings: Settings,
    domain: str,
    addresses: tuple[str, ...] = (),
    ports: Mapping[str, int] | None = None,
    unreadable: Callable[[Unreadable], None] | None = None,
) -> MailSetup:
    """The setup of ``domain``: ``ports`` are the public ports when known (the running
    server's listeners; those not in :data:`PUBLIC_SERVICES` are ignored), else those the
    configuration names; ``unreadable`` as for :func:`dkim_keys`."""
    if ports is None:
        ports = configured_ports(settings.listen)
    return MailSetup(
        domain=domain,
        hostname=settings.hostname,
        ports={name: port for name, port in ports.items() if name in PUBLIC_SERVICES},
        dkim=dkim_keys(settings, domain, unreadable),
        mta_sts_mode=settings.web.mta_sts_mode,
        addresses=addresses,
        own_addresses=own_addresses(),
        relay=settings.queue.relay.address[0] if settings.queue.relay.host else "",
    )
