"""The twisted.web Site of the web listeners: the bounded request, no tracebacks, an idle
time-out, and the connection limits every listener has (``[limits] max_connections`` in all,
``max_connections_per_ip`` per client address; ourmail/net/admission.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from ourmail.config import Limits
from ourmail.net.admission import ConnectionCounts
from ourmail.web.request import WebRequest

#: Seconds an idle HTTP connection stays open (browsers reopen one at once).
CONNECTION_TIMEOUT = 300


class _Refused(Protocol):
    """A connection over the limits: closed at once, before any TLS handshake."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class CountedSite(server.Site):
    """A Site that admits a connection only within the listener's limits."""

    def __init__(
        self,
        root: resource.IResource,
        limits: Limits,
        logged_in: Callable[[IRequest], bool] | None = None,
    ) -> None:
        super().__init__(root, requestFactory=WebRequest, timeout=CONNECTION_TIMEOUT)
        self.displayTracebacks = False
        self.counts = ConnectionCounts(limits)
        #: The largest attachment upload taken (WebRequest's LARGER_BODIES).
        self.max_message_size = limits.max_message_size
        #: Whether a request (its cookies parsed, its body not yet read) belongs to a live
        #: session: only then may its body be larger than a login form's.
        self.logged_in = logged_in

    def buildProtocol(self, addr: IAddress | None) -> Any:
        client = str(getattr(addr, "host", "local"))
        if self.counts.admit(client) is not None:
            return _Refused()
        channel = super().buildProtocol(addr)
        lost = channel.connectionLost

        def counted_lost(reason: Failure) -> None:
            self.counts.release(client)
            lost(reason)

        channel.connectionLost = counted_lost
        return channel
