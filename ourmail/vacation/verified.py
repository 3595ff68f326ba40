"""Whether this server verified the envelope sender of a message, from its own
``Authentication-Results`` (RFC 8601; the filter chain removes forged ones under our
authserv-id on arrival).  The out-of-office reply goes only to a verified sender, so a spammer
who forges someone's address as MAIL FROM cannot make this server mail its text to them
(backscatter)."""

from __future__ import annotations

import re
from typing import Any

import authres  # type: ignore[import-untyped]

_FIELD_END = re.compile(rb"\r?\n(?![ \t])")
#: Octets of the header section read for the verdicts.
HEAD_LIMIT = 64 * 1024


def _our_results(head: bytes, authserv_id: str) -> list[object] | None:
    """The results of every Authentication-Results field of ours in ``head``; None when
    there is none (no check ran: the filter chain is off)."""
    end = head.find(b"\r\n\r\n")
    section = head[:HEAD_LIMIT] if end < 0 else head[: min(end + 2, HEAD_LIMIT)]
    found: list[object] | None = None
    for raw in _FIELD_END.split(section):
        name, colon, value = raw.partition(b":")
        if not colon or name.strip().lower() != b"authentication-results":
            continue
        text = re.sub(r"\r?\n[ \t]", " ", value.decode("utf-8", "replace")).strip()
        parsed = _parse(text)
        if parsed is not None and str(parsed.authserv_id).lower() == authserv_id.lower():
            found = [*(found or []), *parsed.results]
    return found


def _parse(value: str) -> Any:
    """An Authentication-Results value parsed by authres, or None when malformed."""
    try:
        return authres.AuthenticationResultsHeader.parse_value(value)
    except Exception:  # authres raises its own and plain errors on malformed input
        return None


def _aligned(domain: str, sender_domain: str) -> bool:
    """``domain`` is the sender's domain or a parent of it (relaxed alignment)."""
    return sender_domain == domain or sender_domain.endswith("." + domain)


def sender_verified(head: bytes, authserv_id: str, sender: str) -> bool | None:
    """True when our results say SPF passed for the envelope sender's domain, or DKIM passed
    for a domain it is aligned with; False when SPF was checked and did not pass, and no
    aligned DKIM signature did either; None when SPF was not checked (no result of ours, or
    none from SPF: the filter chain is off or the client is on a trusted network)."""
    results = _our_results(head, authserv_id) if authserv_id else None
    if results is None:
        return None
    sender_domain = sender.rpartition("@")[2].lower().rstrip(".")
    spf_checked = False
    for result in results:
        method = str(getattr(result, "method", "")).lower()
        spf_checked = spf_checked or method == "spf"
        if str(getattr(result, "result", "")).lower() != "pass":
            continue
        for prop in getattr(result, "properties", []):
            kind = (str(prop.type).lower(), str(prop.name).lower())
            value = str(prop.value).lower().rpartition("@")[2].rstrip(".")
            if method == "spf" and kind == ("smtp", "mailfrom") and value == sender_domain:
                return True
            if method == "dkim" and kind == ("header", "d") and _aligned(value, sender_domain):
                return True
    return False if spf_checked else None
