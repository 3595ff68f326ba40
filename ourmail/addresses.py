"""Mail addresses as ourmail stores and compares them."""

from __future__ import annotations

import re
import unicodedata

from ourmail.config import ConfigError, normalise_domain

# RFC 5321 §4.1.2 Dot-string, with RFC 6531 §3.3's UTF-8 characters as atext too. Quoted local
# parts are valid SMTP but never name a local account.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010FFFF]"
_LOCAL_RE = re.compile(rf"^{_ATEXT}+(\.{_ATEXT}+)*$")
MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1 (octets)


class AddressError(ValueError):
    """Not an address ourmail can host."""


def normalise_address(
    address: str, default_domain: str | None = None, max_local: int = MAX_LOCAL_PART
) -> str:
    """``Local@Example.ORG`` -> ``local@example.org``; a bare local part gets ``default_domain``.

    Raises AddressError for anything that is not a plain dot-atom address, or whose local part
    is longer than ``max_local`` octets (RFC 5321's 64 unless a caller must be more liberal).
    """
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at:
        if default_domain is None:
            raise AddressError(f"not an address: {address!r}")
        local, domain = address, default_domain
    local = unicodedata.normalize("NFC", local)
    if not local or len(local.encode("utf-8")) > max_local or not _LOCAL_RE.match(local):
        raise AddressError(f"not an address: {address!r}")
    if any(unicodedata.category(c)[0] in "CZ" for c in local if ord(c) > 0x7F):
        raise AddressError(f"not an address: {address!r}")  # no control or space characters
    try:
        domain = normalise_domain(domain)  # a U-label becomes its A-label (IDNA)
    except ConfigError as e:
        raise AddressError(f"not an address: {address!r}") from e
    return f"{local.lower()}@{domain}"
