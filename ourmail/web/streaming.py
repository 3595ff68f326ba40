"""Sending a large response body in pieces, as the client takes them.

A 10 MB attachment or message source is read from the stored message (a memory map) one
piece at a time by a pull producer (twisted.internet.interfaces.IPullProducer): the next piece
is read only when the transport wants more, so a slow client holds at most a piece or two of
it in memory, never the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from twisted.web import server
from twisted.web.iweb import IRequest
from zope.interface import implementer

log = Logger()


@implementer(IPullProducer)
class PieceProducer:
    """Writes the next piece of ``pieces`` each time the transport asks for more; fires
    ``done`` at the end, or when the transport stops it (the client went away)."""

    def __init__(
        self, request: server.Request, pieces: Iterator[bytes], done: Deferred[None]
    ) -> None:
        self.request = request
        self.pieces = pieces
        self.done = done

    def resumeProducing(self) -> None:
        try:
            piece = next(self.pieces, None)
        except Exception:  # the headers are sent: cut the connection, the download fails
            log.failure("response body failed midway")
            self.request.loseConnection()
            self._end()
            return
        if piece is None:
            self._end()
        elif piece:
            self.request.write(piece)

    def stopProducing(self) -> None:
        self._end()

    def _end(self) -> None:
        if not self.done.called:
            self.request.unregisterProducer()
            self.done.callback(None)


def stream(request: IRequest, pieces: Iterator[bytes]) -> Deferred[None]:
    """Write ``pieces`` to ``request`` as the client reads them; fires when all are written
    (the caller then finishes the response), or when the client went away."""
    done: Deferred[None] = Deferred()
    target = cast(server.Request, request)
    target.registerProducer(PieceProducer(target, pieces, done), False)
    return done
