"""The DKIM key records (``selector._domainkey.domain`` TXT) that DKIM and ARC verification
need, fetched through the server's ``twisted.names`` resolver before dkimpy is asked, so
dkimpy never makes a (blocking) lookup of its own."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.names import dns
from twisted.names.error import DNSNameError


async def key_records(
    resolver: Any,
    name: str,
    attempts: tuple[float, ...],
    clock: IReactorTime | None = None,
    limit: float | None = None,
) -> list[bytes]:
    """The TXT records at ``name``, each one's strings joined (RFC 6376 §3.6.2.2); none when
    the name does not exist or has no TXT (NXDOMAIN is "no key", RFC 6376 §6.1.2).  Each try
    waits ``attempts[i]`` seconds, and all of them at most ``limit`` (with ``clock``); a
    time-out or another DNS failure raises as twisted.names raised it."""
    d = resolver.lookupText(name, timeout=attempts)
    if clock is not None and limit is not None:
        d.addTimeout(limit, clock)
    try:
        answers, _, _ = await d
    except DNSNameError:
        return []
    return [b"".join(a.payload.data) for a in answers if a.type == dns.TXT]
