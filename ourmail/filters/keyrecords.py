"""What DKIM and ARC verification share: the key records (``selector._domainkey.domain`` TXT)
they need, fetched through the server's ``twisted.names`` resolver before dkimpy is asked (so
dkimpy never makes a blocking lookup of its own), and whether a message is small enough for
its header to be read on the reactor thread."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.names import dns
from twisted.names.error import DNSNameError

from ourmail.interfaces import MailContext

#: A message in memory up to this size has its signature fields found on the reactor thread
#: (the header is read, not the body); a bigger one, or one in a file, in a thread.
INLINE_PARSE = 256 * 1024


def small_in_memory(context: MailContext) -> bytes | None:
    """The message at the data stage when it is in memory and at most :data:`INLINE_PARSE`
    bytes (its header may be read on the reactor thread), else None."""
    content = context.content
    return content if isinstance(content, bytes) and len(content) <= INLINE_PARSE else None


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
