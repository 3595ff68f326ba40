"""Connection limits of a listener, counted in one place even when several processes accept.

A listener admits at most ``max_connections`` sessions in all and ``max_connections_per_ip``
from one client address (``[limits]``).  In one process a :class:`ConnectionCounts` table
decides at once.  When worker processes accept on the same socket (``[smtp] mx_processes``),
the master's table stays the only one, so a client spreading its connections over the
processes meets the same limits:

* Each worker has a stream socket to the master (a socket pair made at spawn).  For each new
  connection the worker asks ``A <id> <client>`` and keeps the session paused (no greeting,
  nothing read) until the master answers ``<id>`` (admitted) or ``<id> <reason>``
  (refused: the session gets the protocol's refusal).  A session's end is ``R <client>``.
* The master counts what each worker holds; when a worker's socket closes (the worker
  stopped, crashed or was restarted) its sessions are released at once.
* If the master is gone, the worker decides on a local table (same limits) for the second
  before it stops by itself: it never waits forever and never admits without a limit.

The master answers from its reactor in microseconds, so asking costs one local round trip
per connection and nothing blocks.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from ourmail.config import Limits

#: Why a session is turned away, as the client is told.
TOO_MANY = "too many connections"
TOO_MANY_FROM_CLIENT = "too many connections from your address"
_REASONS = {"all": TOO_MANY, "client": TOO_MANY_FROM_CLIENT}


class ConnectionCounts:
    """Open sessions of one listener, in all and per client address."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open: dict[str, int] = {}
        self.total = 0
        #: Sessions admitted and connections refused since start (docs/metrics.md).
        self.admitted = self.refused = 0

    def admit(self, client: str) -> str | None:
        """Count a new session from ``client``; or, when a limit is reached, count only the
        refusal and return why."""
        if self.total >= self.limits.max_connections:
            self.refused += 1
            return TOO_MANY
        held = self.open.get(client, 0)
        if held >= self.limits.max_connections_per_ip:
            self.refused += 1
            return TOO_MANY_FROM_CLIENT
        self.open[client] = held + 1
        self.total += 1
        self.admitted += 1
        return None

    def release(self, client: str) -> None:
        """A session counted for ``client`` ended."""
        held = self.open.get(client, 0)
        if held <= 0:
            return
        self.total -= 1
        if held > 1:
            self.open[client] = held - 1
        else:
            del self.open[client]


# -- the master's side ------------------------------------------------------------------------


class CountsServer(LineOnlyReceiver):
    """The master's end of one worker's socket: answers admissions from the shared table."""

    delimiter = b"\n"
    MAX_LENGTH = 512

    def __init__(self, counts: ConnectionCounts) -> None:
        self.counts = counts
        self.held: collections.Counter[str] = collections.Counter()

    def lineReceived(self, line: bytes) -> None:
        kind, _, rest = line.decode("ascii", "replace").partition(" ")
        if kind == "A":
            ident, _, client = rest.partition(" ")
            if not (ident and client):
                return
            refused = self.counts.admit(client)
            if refused is None:
                self.held[client] += 1
                self.sendLine(ident.encode("ascii", "replace"))
            else:
                kind = "all" if refused == TOO_MANY else "client"
                self.sendLine(f"{ident} {kind}".encode("ascii", "replace"))
        elif kind == "R" and self.held[rest] > 0:
            self.held[rest] -= 1
            self.counts.release(rest)

    def connectionLost(self, reason: Failure | None = None) -> None:
        for client, n in self.held.items():
            for _ in range(n):
                self.counts.release(client)
        self.held.clear()


class CountsServerFactory(Factory):
    """Builds the master's end for each worker (``adoptStreamConnection``)."""

    noisy = False

    def __init__(self, counts: ConnectionCounts) -> None:
        self.counts = counts

    def buildProtocol(self, addr: Any) -> CountsServer:
        return CountsServer(self.counts)


# -- a worker's side --------------------------------------------------------------------------


class CountsClient(LineOnlyReceiver):
    """A worker's end: asks the master, or decides locally once the master is gone."""

    delimiter = b"\n"
    MAX_LENGTH = 512

    def __init__(self, limits: Limits) -> None:
        self.local = ConnectionCounts(limits)
        self.connected = False
        self._ids = itertools.count()
        self._waiting: dict[str, tuple[str, Deferred[str | None]]] = {}

    def connectionMade(self) -> None:
        self.connected = True

    def admit(self, client: str) -> Deferred[str | None]:
        """Fires with None once the session from ``client`` is counted, or with why it is
        refused."""
        if not self.connected:
            return succeed(self.local.admit(client))
        ident = str(next(self._ids))
        d: Deferred[str | None] = Deferred()
        self._waiting[ident] = (client, d)
        self.sendLine(f"A {ident} {client}".encode("ascii", "replace"))
        return d

    def release(self, client: str) -> None:
        """A counted session ended."""
        if self.connected:
            self.sendLine(f"R {client}".encode("ascii", "replace"))
        else:
            self.local.release(client)

    def lineReceived(self, line: bytes) -> None:
        ident, _, kind = line.decode("ascii", "replace").partition(" ")
        waiting = self._waiting.pop(ident, None)
        if waiting is not None:
            waiting[1].callback(_REASONS.get(kind, TOO_MANY) if kind else None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected = False
        waiting, self._waiting = self._waiting, {}
        for client, d in waiting.values():
            d.callback(self.local.admit(client))


class _Gate(Protocol):
    """Holds a new connection, paused, until its admission is known; then hands the
    transport to the session protocol."""

    def __init__(self, factory: AdmittingFactory, client: str) -> None:
        self.gate, self.client = factory, client
        self.lost = False

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.gate.counts.admit(self.client).addCallback(self._admitted)

    def _admitted(self, refused: str | None) -> None:
        if self.lost:
            if refused is None:
                self.gate.counts.release(self.client)
            return
        session = self.gate.sessions.session(self.client, refused)
        self.transport.protocol = session
        session.makeConnection(self.transport)
        self.transport.resumeProducing()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True


class AdmittingFactory(ServerFactory):
    """A worker's listener: each connection waits for the master's admission, then becomes a
    session of ``sessions`` (a :class:`~ourmail.net.lineproto.SessionFactory` counting with
    the same ``counts``)."""

    noisy = False

    def __init__(self, sessions: Any, counts: CountsClient) -> None:
        self.sessions = sessions
        self.counts = counts

    def buildProtocol(self, addr: Any) -> _Gate:
        return _Gate(self, str(getattr(addr, "host", "local")))
