"""What ``ourmail dns`` and the admin console's DNS page call: a domain's records (with
their zone snippet) and the live check of them, as plain attrs objects.

Example (in the reactor thread)::

    lookup = Lookup(make_resolver())  # once: it re-reads /etc/resolv.conf every minute
    found = await deferToThread(domain_records, settings, "example.org",
                                await current_addresses(lookup, settings.hostname))
    for result in await check_domain(lookup, found):
        print(result.line())
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping

import attrs
from twisted.internet import defer

from ourmail.config import Settings
from ourmail.dns.check import CheckResult, check_records
from ourmail.dns.fromsettings import mail_setup
from ourmail.dns.lookup import Lookup
from ourmail.dns.records import MailSetup, Record, expected_records
from ourmail.dns.zone import zone_snippet
from ourmail.secure.dkimkeys import Unreadable


@attrs.frozen
class DomainRecords:
    """The records one domain should publish."""

    setup: MailSetup
    records: tuple[Record, ...]
    #: The BIND zone-file snippet of them.
    zone: str


def records_of(setup: MailSetup) -> DomainRecords:
    """The records of ``setup`` (pure)."""
    records = tuple(expected_records(setup))
    return DomainRecords(setup, records, zone_snippet(setup, records))


def domain_records(
    settings: Settings,
    domain: str,
    addresses: tuple[str, ...] = (),
    ports: Mapping[str, int] | None = None,
    unreadable: Callable[[Unreadable], None] | None = None,
) -> DomainRecords:
    """The records of ``domain`` as configured here (see
    :func:`ourmail.dns.fromsettings.mail_setup`, also for ``unreadable``); reads the DKIM
    keys: call in a thread."""
    return records_of(mail_setup(settings, domain, addresses, ports, unreadable))


async def current_addresses(lookup: Lookup, hostname: str) -> tuple[str, ...]:
    """The A and AAAA addresses ``hostname`` has now (none when it has none or DNS does not
    answer): the hint shown in the records."""
    v4 = await lookup.query(hostname, "A")
    v6 = await lookup.query(hostname, "AAAA")
    return tuple(p.dottedQuad() for p in v4.records) + tuple(
        str(ipaddress.IPv6Address(p.address)) for p in v6.records
    )


def check_domain(lookup: Lookup, found: DomainRecords) -> defer.Deferred[list[CheckResult]]:
    """Every record of ``found`` checked against DNS (one result per record; the host's
    addresses once)."""
    return check_records(lookup, found.setup, found.records)
