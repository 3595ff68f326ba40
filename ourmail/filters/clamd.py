"""A client for ClamAV's daemon, clamd: its ``INSTREAM`` command over TCP or a unix socket.

Implementation notes (keep these true when changing this module; the protocol is described
in ``man clamd``):

* Each connection opens a session with ``zIDSESSION\\0`` and then scans one message at a
  time: ``zINSTREAM\\0``, the message as chunks ``<4-byte big-endian length><data>``, and a
  zero-length chunk.  clamd answers ``<id>: stream: OK``, ``<id>: stream: NAME FOUND`` or
  ``<id>: ... ERROR`` (``INSTREAM size limit exceeded. ERROR`` past its StreamMaxLength, after
  which it closes the connection), each reply ending in NUL (the ``z`` prefix).  A session
  saves a connection and a clamd thread hand-off per message; idle sessions are closed after
  :data:`IDLE_TIMEOUT`, before clamd's own IdleTimeout (30 s by default) does it.
* At most ``connections`` scans run at once (clamd's MaxThreads is 10 by default); more
  wait their turn.  A reused session that clamd closed meanwhile is retried once on a new
  connection (scanning is idempotent).
* A message on disk is read in a thread, :data:`CHUNK` bytes at a time, and the next chunk
  is read only once the socket has taken the last one (the transport's producer flow
  control): a 20 MB message never sits whole in memory.  A message larger than ``max_size``
  is not sent at all (:class:`TooLarge`).
* A reply is at most :data:`MAX_REPLY` bytes; anything clamd sends that is not a reply to
  the scan under way, too long, or not one of its replies ends the connection with a
  :class:`ClamdError`, as does a connection that fails or closes.  Cancelling a scan (a
  time-out) aborts its connection.
"""

from __future__ import annotations

import ipaddress
import os
import re
import struct
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import BinaryIO

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from zope.interface import implementer

#: clamd's StreamMaxLength default (25 MB): a longer stream is refused by clamd.
DEFAULT_MAX_SIZE = 25 * 1024 * 1024
#: Bytes read and sent as one chunk.
CHUNK = 1024 * 1024
#: The longest reply taken from clamd (a signature name is well under 200 characters).
MAX_REPLY = 4096
#: Seconds an unused session stays open (clamd closes idle ones after IdleTimeout, 30 s).
IDLE_TIMEOUT = 20.0
_FOUND = re.compile(r"stream: (.+) FOUND")
_REPLY = re.compile(rb"(\d+): (.*)", re.DOTALL)


class ClamdError(Exception):
    """clamd could not scan: unreachable, closed the connection, or answered an error or
    something that is not one of its replies."""


class ClamdClosed(ClamdError):
    """The connection to clamd ended before its reply."""


class ClamdSizeLimit(ClamdError):
    """clamd refused the stream as longer than its StreamMaxLength."""


class TooLarge(Exception):
    """The message is larger than the client's ``max_size``: it was not sent to clamd."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, more than the {limit} bytes the scanner takes")
        self.size, self.limit = size, limit


@attrs.frozen
class ScanResult:
    """clamd's verdict on a message: clean, or the name of the signature it matched."""

    signature: str | None = None

    @property
    def infected(self) -> bool:
        return self.signature is not None


def parse_reply(text: str) -> ScanResult:
    """The result in a reply to ``INSTREAM`` (without its session id and NUL); raises
    :class:`ClamdError` for an error or anything else."""
    if text == "stream: OK":
        return ScanResult()
    found = _FOUND.fullmatch(text)
    if found:
        return ScanResult(found.group(1))
    if text == "INSTREAM size limit exceeded. ERROR":
        raise ClamdSizeLimit(text)
    if text.endswith(" ERROR"):
        raise ClamdError(f"clamd: {text[:200]}")
    raise ClamdError(f"not a reply of clamd: {text[:80]!r}")


def endpoint(reactor: object, address: str) -> IStreamClientEndpoint:
    """The endpoint for ``address``: a unix socket path (``/run/clamav/clamd.ctl``) or
    ``HOST:PORT`` with an IP address or ``localhost`` (``[::1]:3310`` for IPv6).  Raises
    ValueError for anything else (no DNS lookup here: clamd runs on a known host)."""
    if address.startswith("/"):
        return UNIXClientEndpoint(reactor, address)  # type: ignore[no-untyped-call]
    host, sep, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"clamd address {address!r} is not /path or HOST:PORT")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"clamd address {address!r}: the host must be an IP address") from None
    tcp = IReactorTCP(reactor)
    if ip.version == 6:
        return TCP6ClientEndpoint(tcp, host, int(port_text))  # type: ignore[no-untyped-call]
    return TCP4ClientEndpoint(tcp, host, int(port_text))


async def _chunks(content: bytes | os.PathLike[str]) -> AsyncGenerator[bytes]:
    """The message :data:`CHUNK` bytes at a time, a file read in a thread."""
    if isinstance(content, bytes):
        for start in range(0, len(content), CHUNK):
            yield content[start : start + CHUNK]
        return
    f: BinaryIO = await deferToThread(open, content, "rb")
    try:
        while chunk := await deferToThread(f.read, CHUNK):
            yield chunk
    finally:
        f.close()


def _size(content: bytes | os.PathLike[str]) -> Deferred[int]:
    if isinstance(content, bytes):
        return defer.succeed(len(content))
    return deferToThread(lambda: os.stat(content).st_size)


@implementer(IPushProducer)
class _Session(Protocol):
    """One clamd connection in an IDSESSION: one scan at a time."""

    def __init__(self) -> None:
        self._buffer = b""
        self._id = 0
        self._reply: Deferred[str] | None = None
        self._writable: Deferred[None] | None = None
        self._paused = False
        self.lost: Failure | None = None
        self.idle_call: IDelayedCall | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self.transport.write(b"zIDSESSION\0")

    async def scan(self, content: bytes | os.PathLike[str]) -> str:
        """Stream ``content``; clamd's reply text (without its id)."""
        assert self.transport is not None and self._reply is None
        self._id += 1
        self._reply = Deferred(lambda _: self.abort())
        reply = self._reply
        self.transport.write(b"zINSTREAM\0")
        try:
            async with aclosing(_chunks(content)) as chunks:  # the file closed on any exit
                async for chunk in chunks:
                    if reply.called or self.lost:
                        break  # clamd answered early (its size limit) or went away
                    self.transport.write(struct.pack(">I", len(chunk)) + chunk)
                    if self._paused:
                        self._writable = Deferred(lambda _: self.abort())
                        await self._writable
                else:
                    if not self.lost:
                        self.transport.write(struct.pack(">I", 0))
        except BaseException:
            # Cancelled while writing, or the file could not be read: no reply is awaited.
            self._reply = None
            self.abort()
            raise
        return await reply

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\0" in self._buffer:
            line, self._buffer = self._buffer.split(b"\0", 1)
            self._answered(line)
        if len(self._buffer) > MAX_REPLY:
            self._fail(ClamdError(f"clamd sent more than {MAX_REPLY} bytes without an end"))

    def _answered(self, line: bytes) -> None:
        match = _REPLY.fullmatch(line)
        if self._reply is None or match is None or int(match.group(1)) != self._id:
            self._fail(ClamdError(f"not a reply of clamd: {line[:80]!r}"))
            return
        reply, self._reply = self._reply, None
        reply.callback(match.group(2).decode("latin-1"))

    def _fail(self, error: Exception) -> None:
        self.lost = self.lost or Failure(error)  # type: ignore[no-untyped-call]
        self.abort()
        self._wake()

    def _wake(self) -> None:
        """The connection failed: the scan under way fails (unless it was cancelled)."""
        reply, self._reply = self._reply, None
        self._resume()
        if reply is not None and not reply.called:
            reply.errback(self.lost)

    def _resume(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.called:
            writable.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = self.lost or Failure(  # type: ignore[no-untyped-call]
            ClamdClosed(f"clamd closed the connection: {reason.getErrorMessage()}")
        )
        if self.idle_call is not None and self.idle_call.active():
            self.idle_call.cancel()
        self._wake()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._resume()

    def stopProducing(self) -> None:
        """The connection is ending: :meth:`connectionLost` follows and wakes the scan."""


#: The longest answer read from clamd to ``PING``.
_MAX_PONG = 64


class _Ping(Protocol):
    """One ``zPING``: fires :attr:`done` with whether clamd answered ``PONG``."""

    def __init__(self) -> None:
        #: Cancelling it (the probe's time-out) aborts the connection.
        self.done: Deferred[bool] = Deferred(lambda _: self._abort())
        self._buffer = b""

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"zPING\0")

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\0" in self._buffer or len(self._buffer) > _MAX_PONG:
            self._finish(self._buffer.split(b"\0", 1)[0] == b"PONG")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._finish(False)

    def _finish(self, ok: bool) -> None:
        if not self.done.called:
            self.done.callback(ok)
        if self.transport is not None:
            self.transport.loseConnection()


class ClamdClient:
    """Scans messages with clamd at ``address`` (see :func:`endpoint`), at most
    ``connections`` at once, refusing to send more than ``max_size`` bytes."""

    def __init__(
        self,
        reactor: object,
        address: str,
        connections: int = 8,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.address = address
        self.max_size = max_size
        self._endpoint = endpoint(reactor, address)
        self._clock = IReactorTime(reactor)
        self._turns = DeferredSemaphore(connections)
        self._idle: list[_Session] = []

    def scan(self, content: bytes | os.PathLike[str]) -> Deferred[ScanResult]:
        """clamd's verdict on ``content`` (the message, or the path of a file holding it).
        Fails with :class:`TooLarge` (nothing sent), :class:`ClamdSizeLimit` or another
        :class:`ClamdError`; cancelling it aborts the connection."""
        return self._turns.run(lambda: Deferred.fromCoroutine(self._scan(content)))

    async def _scan(self, content: bytes | os.PathLike[str]) -> ScanResult:
        size = await _size(content)
        if size > self.max_size:
            raise TooLarge(size, self.max_size)
        session, reused = await self._session()
        try:
            try:
                text = await session.scan(content)
            except ClamdClosed:
                if not reused:
                    raise
                # A kept session that clamd closed meanwhile: once more, on a new connection.
                session, _ = await self._session(fresh=True)
                text = await session.scan(content)
            result = parse_reply(text)
        except BaseException:
            session.abort()
            raise
        self._keep(session)
        return result

    async def _session(self, fresh: bool = False) -> tuple[_Session, bool]:
        """A session and whether it was used before."""
        while self._idle and not fresh:
            session = self._idle.pop()
            if session.idle_call is not None and session.idle_call.active():
                session.idle_call.cancel()
            if session.lost is None:
                return session, True
        try:
            session = await connectProtocol(self._endpoint, _Session())  # type: ignore[no-untyped-call]
            return session, False
        except ConnectError as e:
            raise ClamdError(f"cannot connect to clamd at {self.address}: {e}") from e

    def _keep(self, session: _Session) -> None:
        if session.lost is not None:
            return
        session.idle_call = self._clock.callLater(IDLE_TIMEOUT, self._expire, session)
        self._idle.append(session)

    def _expire(self, session: _Session) -> None:
        if session in self._idle:
            self._idle.remove(session)
        session.abort()

    def ping(self) -> Deferred[bool]:
        """Whether clamd answers ``zPING`` with ``PONG``, on a connection of its own (the
        probe of ``ourmail_backend_up``, ourmail/filters/probes.py); cancelling it aborts the
        connection."""
        return Deferred.fromCoroutine(self._ping())

    async def _ping(self) -> bool:
        ping = _Ping()
        await connectProtocol(self._endpoint, ping)  # type: ignore[no-untyped-call]
        return await ping.done

    def close(self) -> None:
        """Close the idle sessions (at shutdown, or in tests)."""
        for session in list(self._idle):
            self._expire(session)
