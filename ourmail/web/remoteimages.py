"""Whose remote images a reader sees: the "always show images from this sender" choice.

Remote images in mail are tracking beacons, so the sanitiser cuts them until the reader asks.
The reader may ask once (for one message) or for a sender.  The senders are kept in the
user's preferences (:class:`ourmail.interfaces.IPreferences`) under :data:`SENDERS_KEY`, a list
of lower-case addresses, at most :data:`MAX_SENDERS` (the oldest choice goes first).

Anyone can write any ``From:``.  A choice for a sender is therefore honoured only for a
message whose ``From:`` this server verified: one whose ``Authentication-Results`` field under
this server's authserv-id (RFC 8601; the server removes forged ones under its id on arrival)
says ``dmarc=pass`` for the From domain (RFC 7489 §3: DMARC passes only when SPF or DKIM
passed for a domain aligned with the From domain).  Without that, the images of a message that
merely claims the sender stay hidden.
"""

from __future__ import annotations

import email.utils
import re

import authres  # type: ignore[import-untyped]

from ourmail.interfaces import IPreferences

#: The preference key: a list of lower-case addresses whose remote images are shown.
SENDERS_KEY = "images.senders"
#: Senders kept, at most.
MAX_SENDERS = 500
#: Octets of the header section read for the sender and its verdicts.
HEAD_LIMIT = 256 * 1024
#: Longest address kept.
MAX_ADDRESS = 320

_FIELD_END = re.compile(rb"\r?\n(?![ \t])")


def header_fields(head: bytes) -> list[tuple[str, str]]:
    """The header fields of ``head`` (a message's first octets) as (lower-case name,
    unfolded value, RFC 5322 §2.2.3), up to the blank line."""
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")
    section = head if end < 0 else head[: end + 2]
    fields = []
    for raw in _FIELD_END.split(section):
        name, colon, value = raw.partition(b":")
        if colon and name and not name[:1].isspace():
            text = re.sub(r"\r?\n[ \t]", " ", value.decode("utf-8", "replace")).strip()
            fields.append((name.decode("ascii", "replace").strip().lower(), text))
    return fields


def verified_sender(head: bytes, authserv_id: str) -> str | None:
    """The From address of a message (its first octets ``head``), lower-case, when this
    server's Authentication-Results (``authserv_id``) say DMARC passed for its domain;
    otherwise None.  A message with no, several or unreadable From addresses has none."""
    if not authserv_id:
        return None
    fields = header_fields(head)
    froms = [value for name, value in fields if name == "from"]
    addresses = [a for _, a in email.utils.getaddresses(froms) if a]
    if len(froms) != 1 or len(addresses) != 1 or len(addresses[0]) > MAX_ADDRESS:
        return None
    address = addresses[0].lower()
    domain = address.rpartition("@")[2]
    if "@" not in address or not domain:
        return None
    # DMARC names the domain as it looks up DNS: the A-label of an IDN (RFC 5890).
    names = {domain, _a_label(domain)}
    for name, value in fields:
        if name == "authentication-results" and any(
            _dmarc_passed(value, authserv_id, d) for d in names if d
        ):
            return address
    return None


def _a_label(domain: str) -> str:
    """``domain`` in ASCII (``xn--`` labels), or "" when it cannot be."""
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return ""


def _dmarc_passed(value: str, authserv_id: str, domain: str) -> bool:
    try:
        parsed = authres.AuthenticationResultsHeader.parse_value(value)
    except Exception:  # authres raises its own and plain errors on malformed input
        return False
    if str(parsed.authserv_id).lower() != authserv_id.lower():
        return False
    return any(
        (str(prop.type), str(prop.name), str(prop.value).lower()) == ("header", "from", domain)
        for result in parsed.results
        if str(result.method).lower() == "dmarc" and str(result.result).lower() == "pass"
        for prop in result.properties
    )


def senders(preferences: IPreferences | None, user: str) -> list[str]:
    """The senders ``user`` always sees remote images from."""
    value = preferences.get(user, SENDERS_KEY) if preferences is not None else None
    if not isinstance(value, list):
        return []
    return [s for s in value if isinstance(s, str)]


def with_sender(current: list[str], sender: str) -> list[str]:
    """``current`` with ``sender`` added (last), at most :data:`MAX_SENDERS` kept."""
    kept = [s for s in current if s != sender] + [sender]
    return kept[-MAX_SENDERS:]
