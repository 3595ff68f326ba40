"""``contrib/dns/zone.template``: the zone snippet of ``ourmail dns records`` for a domain
that does not exist yet, with ``{{placeholders}}`` where its values go (docs/deploy.md, "DNS
zone").  It is rendered by the same code as the snippet (ourmail/dns/zone.py), for a server
on the standard ports with one DKIM key and an IPv4 and an IPv6 address, so the two cannot
drift apart: a test renders it again and compares.

Regenerate the shipped file after changing the records::

    python -m ourmail.dns.template > contrib/dns/zone.template

Filled with :func:`fill` and :func:`values_for` (or ``sed``), it is exactly what
``ourmail dns records`` prints for that domain.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping

from ourmail.config import default_listen
from ourmail.dns.fromsettings import configured_ports
from ourmail.dns.records import DkimPublic, MailSetup, Record, expected_records
from ourmail.dns.zone import zone_snippet

#: Placeholder -> what goes there.
PLACEHOLDERS = {
    "domain": "the mail domain, e.g. example.org",
    "host": "the first label of the server's host name inside the domain, e.g. mail",
    "ipv4": "the server's public IPv4 address",
    "ipv6": "the server's public IPv6 address",
    "ipv4_reverse": "the reverse name of the IPv4 address (for the provider's PTR record)",
    "ipv6_reverse": "the reverse name of the IPv6 address (for the provider's PTR record)",
    "dkim_selector": "the DKIM key's selector (`ourmail dkim list`)",
    "dkim_algorithm": "rsa or ed25519",
    "dkim_record": "the DKIM key record's text as quoted strings of at most 255 bytes",
    "mta_sts_id": "the id of the MTA-STS policy (`ourmail dns records` prints it)",
}

# Stand-ins rendered by the real code, then replaced by their placeholders.  Each is a
# string no real record contains.
_DOMAIN = "zone-template.invalid"
_HOST = "mailhost"
_IPV4 = "192.0.2.123"
_IPV6 = "2001:db8::123"
_SELECTOR = "dkimselector"
_ALGORITHM = "rsa"
_KEY = "DKIMPUBLICKEY"


def _template_setup() -> MailSetup:
    """The stand-in setup the template is rendered from."""
    return MailSetup(
        domain=_DOMAIN,
        hostname=f"{_HOST}.{_DOMAIN}",
        ports=configured_ports(default_listen(True)),
        dkim=(DkimPublic(_SELECTOR, _ALGORITHM, _KEY),),
        addresses=(_IPV4, _IPV6),
    )


def render_template() -> str:
    """The text of ``contrib/dns/zone.template``."""
    setup = _template_setup()
    records = expected_records(setup)
    text = zone_snippet(setup, records)
    [dkim] = [r for r in records if r.kind == "dkim"]
    stand_ins = [
        (dkim.rdata(), "{{dkim_record}}"),
        (setup.mta_sts_id, "{{mta_sts_id}}"),
        (f"({_ALGORITHM})", "({{dkim_algorithm}})"),
        (ipaddress.ip_address(_IPV4).reverse_pointer, "{{ipv4_reverse}}"),
        (ipaddress.ip_address(_IPV6).reverse_pointer, "{{ipv6_reverse}}"),
        (_IPV4, "{{ipv4}}"),
        (_IPV6, "{{ipv6}}"),
        (_SELECTOR, "{{dkim_selector}}"),
        (_DOMAIN, "{{domain}}"),
        (_HOST, "{{host}}"),
    ]
    for value, placeholder in stand_ins:
        text = text.replace(value, placeholder)
    header = [
        "; A BIND zone-file template for a mail domain served by ourmail (docs/deploy.md).",
        "; Replace each {{placeholder}}:",
        *(f";   {{{{{name}}}}}  {what}" for name, what in PLACEHOLDERS.items()),
        "; or run `ourmail dns records DOMAIN` on the server: it prints this zone filled in.",
        ";",
    ]
    return "\n".join(header) + "\n" + text


def values_for(setup: MailSetup) -> dict[str, str]:
    """The placeholders' values for ``setup`` (a host name inside the domain, one DKIM key,
    one IPv4 and one IPv6 address)."""
    suffix = "." + setup.domain
    if not setup.hostname.endswith(suffix) or len(setup.dkim) != 1:
        raise ValueError("the template is for a host inside the domain with one DKIM key")
    v4 = [a for a in setup.addresses if ":" not in a]
    v6 = [a for a in setup.addresses if ":" in a]
    if len(v4) != 1 or len(v6) != 1:
        raise ValueError("the template is for one IPv4 and one IPv6 address")
    key = setup.dkim[0]
    record = Record("", "TXT", "dkim", "", text=key.text)
    return {
        "domain": setup.domain,
        "host": setup.hostname[: -len(suffix)],
        "ipv4": v4[0],
        "ipv6": v6[0],
        "ipv4_reverse": ipaddress.ip_address(v4[0]).reverse_pointer,
        "ipv6_reverse": ipaddress.ip_address(v6[0]).reverse_pointer,
        "dkim_selector": key.selector,
        "dkim_algorithm": key.algorithm,
        "dkim_record": record.rdata(),
        "mta_sts_id": setup.mta_sts_id,
    }


def fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{{name}}`` replaced by ``values[name]``; the header's list
    of placeholders is dropped.  A placeholder without a value raises ValueError."""
    body = template[template.index("; DNS records for ") :]
    missing = sorted(set(re.findall(r"\{\{(\w+)\}\}", body)) - set(values))
    if missing:
        raise ValueError("no value for " + ", ".join(missing))
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], body)


if __name__ == "__main__":
    sys.stdout.write(render_template())
