"""Mail addresses as ourmail stores and compares them."""

from __future__ import annotations

import re

from ourmail.config import ConfigError, normalise_domain

# RFC 5321 §4.1.2 Dot-string. Quoted local parts are valid SMTP but never name a local account.
_LOCAL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1


class AddressError(ValueError):
    """Not an address ourmail can host."""


def normalise_address(address: str, default_domain: str | None = None) -> str:
    """``Local@Example.ORG`` -> ``local@example.org``; a bare local part gets ``default_domain``.

    Raises AddressError for anything that is not a plain dot-atom address.
    """
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at:
        if default_domain is None:
            raise AddressError(f"not an address: {address!r}")
        local, domain = address, default_domain
    if not local or len(local) > MAX_LOCAL_PART or not _LOCAL_RE.match(local):
        raise AddressError(f"not an address: {address!r}")
    try:
        domain = normalise_domain(domain)
    except ConfigError as e:
        raise AddressError(f"not an address: {address!r}") from e
    return f"{local.lower()}@{domain}"
