"""The records of a domain as a BIND zone-file snippet an admin pastes into their zone
(RFC 1035 §5.1 master file syntax): ``$ORIGIN`` the domain, names relative to it, a comment
above each record saying what it is for.

A record outside the zone (the host name's address when the host is in another domain) and
the address placeholder are written commented out: pasting the snippet never publishes a
wrong value.
"""

from __future__ import annotations

from collections.abc import Sequence

from ourmail.dns.records import MailSetup, Record

#: The TTL suggested: an hour, short enough to correct a mistake the same day.
TTL = 3600


def owner(name: str, origin: str) -> str | None:
    """``name`` relative to ``origin`` (``@`` for the origin itself), or None when it is not
    inside it."""
    if name == origin:
        return "@"
    if name.endswith("." + origin):
        return name[: -len(origin) - 1]
    return None


def zone_snippet(setup: MailSetup, records: Sequence[Record]) -> str:
    """The snippet for ``setup.domain`` (ends with a newline)."""
    origin = setup.domain
    lines = [
        f"; DNS records for {origin}, whose mail {setup.hostname} handles",
        f"; (written by `ourmail dns records {origin}`; check them with `ourmail dns check "
        f"{origin}`)",
        f"$ORIGIN {origin}.",
        f"$TTL {TTL}",
    ]
    if not setup.dkim:
        lines += ["", f"; no DKIM key for {origin} yet: make one with `ourmail dkim gen {origin}`"]
    for record in records:
        relative = owner(record.name, origin)
        line = f"{relative or record.name + '.'}\tIN\t{record.type}\t{record.rdata()}"
        lines += ["", f"; {record.purpose}"]
        if record.type in ("A", "AAAA") and not record.address:
            lines.append(f"; {line}")
        elif record.type == "PTR":
            lines += ["; (in the reverse zone of the address, kept by its provider)", f"; {line}"]
        elif relative is None:
            lines += [f"; (publish in the zone of {record.name}, not here)", f"; {line}"]
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
