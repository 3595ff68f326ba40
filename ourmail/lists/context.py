"""What every part of the list manager works with: the list database, the mail system's
interfaces, the server's limits and the clock.  Built once by ``lists/service.py``; the
parts (posting, requests, moderation, bounces, digests) take it as their first argument.

A part handles one arrival with a function of the form::

    async def handle(ctx: ListContext, lst: ListSettings, arrival: ListArrival,
                     message: Path) -> None

``message`` is the spooled file (CRLF line endings, as received); the spool removes it once
the handler returns.  A handler that raises is retried later (logged); it must therefore be
idempotent for what it already did durably, or record its progress.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from ourmail.config import ListsSettings
from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.interfaces import (
    IAuditLog,
    IDirectory,
    IForwardSealer,
    IMailStore,
    IOutboundQueue,
    ListArrival,
)
from ourmail.lists.listdb import ListDB
from ourmail.lists.model import ListSettings

T = TypeVar("T")


def touch_changed(root: Path) -> None:
    """Mark the lists as changed (``<root>/changed``): running servers read them again."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "changed").touch()


#: A part's handler of one arrival (see the module's docstring).
Handler = Callable[["ListContext", ListSettings, ListArrival, Path], Awaitable[None]]


@attrs.define
class ListContext:
    """The list manager's surroundings."""

    db: ListDB
    #: ``<data>/lists``: the database, the spool (``spool/``), held posts (``held/``).
    root: Path
    directory: IDirectory
    store: IMailStore
    queue: IOutboundQueue
    settings: ListsSettings
    #: The server's host name (Message-IDs, the Received: field of what the list sends).
    hostname: str
    #: The web listener's base URL, ``https://host[:port]`` (links in notices and headers).
    web_url: str
    #: The key of the HMAC tokens in one-click unsubscribe links (32 random octets, kept in
    #: ``<data>/lists/secret``).
    secret: bytes
    #: ARC sealing of what the list distributes; None: sent unsealed.
    sealer: IForwardSealer | None = None
    #: The DMARC policy (``none``, ``quarantine``, ``reject``) an author domain publishes,
    #: None when it publishes none; wired by service.py to the filters' policy discovery.
    dmarc_policy: Callable[[str], Deferred[str | None]] | None = None
    #: The audit log: moderation decisions by mail and on the confirmation page are written
    #: there (the console writes its own); None: not written.
    audit: IAuditLog | None = None
    #: This server's authserv-id (RFC 8601 §2.5): its ``Authentication-Results:`` fields
    #: are the ones the list trusts (``lists/identity.py``); "": none is trusted.
    authserv_id: str = ""
    #: Largest message the server takes at all (``[limits] max_message_size``).
    max_message_size: int = 50 * 1024 * 1024
    clock: Callable[[], float] = time.time

    def changed(self) -> Deferred[None]:
        """Mark the lists as changed (a member came or went): the list service reads them
        again at its next look, seconds away, and who may read each archive with them."""
        return self.run(touch_changed, self.root)

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """``f(*args)`` in a thread (the database and files block)."""
        return deferToThread(f, *args)

    def send(self, lst: ListSettings, recipients: Sequence[str], message: bytes) -> Deferred[str]:
        """Queue a message the list itself writes (a confirmation request, a notice) from the
        list's ``-bounces`` address; fires once it is durable.  Local recipients are
        delivered by the queue too."""
        return self.queue.enqueue(
            lst.role_address("bounces"),
            [(r, NO_RCPT_PARAMS) for r in recipients],
            message,
            NO_MAIL_PARAMS,
            not all(r.isascii() for r in recipients) or not message.isascii(),
        )
