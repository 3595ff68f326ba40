"""A bounded, pausable line protocol: the base of the SMTP, IMAP and POP3 servers.

Implementation notes (keep these true when changing this module):

* Memory is bounded: a line longer than ``max_line_length`` is reported once through
  :meth:`LineProtocol.line_too_long` and the rest of it is discarded up to the next LF; the
  connection stays usable.  Raw mode (SMTP DATA, IMAP literals) hands each chunk to
  :meth:`raw_data_received` as it arrives, so the subclass bounds what it keeps.
* Lines end at LF; one CR before it is removed.  Lines are processed strictly in order: while the
  subclass waits on a Deferred it calls :meth:`pause` and later :meth:`resume`, and pipelined
  input waits in the buffer.  The transport itself is paused only when input arrives during a
  pause, so a flood cannot grow the buffer past one read, while the usual command-reply
  exchange costs no extra system calls.
* STARTTLS: :meth:`start_tls` throws away everything buffered after the STARTTLS line, so
  plaintext injected before the handshake is never executed as a command (CVE-2011-0411 class).
* No exception from a handler reaches Twisted: it is logged with its traceback and the client gets
  the protocol's own "internal error" reply from :meth:`internal_error`.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IPullProducer
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.config import Limits
from ourmail.net.admission import ConnectionCounts


class LineProtocol(Protocol, TimeoutMixin):
    """Line/raw receiver with limits, ordered async handling and STARTTLS hygiene."""

    log = Logger()
    max_line_length = 8192
    idle_timeout: int | None = 1800
    max_errors = 20
    #: True once the connection is encrypted (implicit TLS or after STARTTLS).
    secure = False
    tls_context: IOpenSSLServerConnectionCreator | None = None
    #: Set by the factory when a connection limit refuses this session.
    refused: str | None = None
    counted_as: str | None = None

    def __init__(
        self,
        limits: Limits | None = None,
        tls_context: IOpenSSLServerConnectionCreator | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.max_commands_before_login = 100
        if limits is not None:
            self.max_line_length = limits.max_line_length
            self.max_errors = limits.max_errors
            self.max_commands_before_login = limits.max_commands_before_login
        self.commands_before_login = 0
        self.tls_context = tls_context
        self.secure = implicit_tls
        self._buf = bytearray()
        self._raw = False
        self._paused = False
        self._transport_paused = False
        self._discarding = False
        self._processing = False
        self.errors = 0
        #: Called once when the connection is lost; None once it has been.
        self._at_close: list[Callable[[], None]] | None = []

    # -- connection -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.setTimeout(self.idle_timeout)
        self.peer = self._peer_string()
        # Replies are small and often follow one another (an untagged line, then the tagged
        # one): without TCP_NODELAY, Nagle holds the second until the client's delayed ACK,
        # 40 ms later.  A TLS wrapper passes the call on to the TCP transport below.
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            with contextlib.suppress(OSError):
                no_delay(True)

    def refuse(self) -> bool:
        """Turn the connection away if a connection limit says so; True if it did."""
        if self.refused is None:
            return False
        self.log.info("{peer} refused: {why}", peer=self.peer, why=self.refused)
        self.send_refusal(self.refused)
        self.close()
        return True

    def quick_ack(self) -> None:
        """Acknowledge received data at once (TCP_QUICKACK, Linux), for when the client is
        known to be waiting for our ACK before it sends the rest of a command."""
        transport = self.transport
        while transport is not None and not isinstance(
            getattr(transport, "socket", None), socket.socket
        ):
            transport = getattr(transport, "transport", None)  # below a TLS layer
        if transport is not None and hasattr(socket, "TCP_QUICKACK"):
            with contextlib.suppress(OSError):
                transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def send_refusal(self, why: str) -> None:
        """Tell the client it is turned away (the protocol's own reply)."""

    def at_close(self, call: Callable[[], None]) -> None:
        """Call ``call()`` when the connection is lost (at once if it already is): a realm's
        logout, say, which must run however the session ends."""
        if self._at_close is None:
            call()
        else:
            self._at_close.append(call)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.setTimeout(None)
        if self.counted_as is not None:
            self.factory.session_ended(self.counted_as)
            self.counted_as = None
        calls, self._at_close = self._at_close or [], None
        for call in calls:
            try:
                call()
            except Exception:
                self.log.failure("{peer}: error at the end of the session", peer=self.peer)

    def _peer_string(self) -> str:
        peer = self.transport.getPeer()
        host = getattr(peer, "host", None)
        return str(host) if host is not None else "local"

    def timeoutConnection(self) -> None:
        self.log.info("{peer} idle timeout", peer=self.peer)
        self.send_goodbye_timeout()
        self.transport.loseConnection()

    def send_goodbye_timeout(self) -> None:
        """Tell the client it is being disconnected for idleness."""

    @property
    def closing(self) -> bool:
        return self.transport is None or bool(getattr(self.transport, "disconnecting", False))

    def close(self) -> None:
        """Stop reading and close once queued output is written."""
        self._buf.clear()
        self._paused = True
        self.transport.loseConnection()

    # -- input --------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self._buf += data
        if self._paused:
            self._pause_transport()
        self._process()

    def _pause_transport(self) -> None:
        if not self._transport_paused and self.transport is not None:
            self._transport_paused = True
            self.transport.pauseProducing()

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while self._buf and not self._paused and not self.closing:
                if self._raw:
                    chunk = bytes(self._buf)
                    self._buf.clear()
                    self._guard(self.raw_data_received, chunk)
                    continue
                idx = self._buf.find(b"\n")
                if idx < 0:
                    if len(self._buf) > self.max_line_length:
                        self._buf.clear()
                        if not self._discarding:
                            self._discarding = True
                            self._guard(self.line_too_long)
                    return
                line = bytes(self._buf[:idx])
                del self._buf[: idx + 1]
                if self._discarding:
                    self._discarding = False
                    continue
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.max_line_length:
                    self._guard(self.line_too_long)
                    continue
                self._guard(self.line_received, line)
        finally:
            self._processing = False

    def _guard(self, handler: Any, *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            self.fail(Failure())

    def fail(self, failure: Failure) -> None:
        """Log an unexpected error and give the client the protocol's internal-error reply."""
        self.log.failure("internal error serving {peer}", failure, peer=self.peer)
        if not self.closing:
            self.internal_error()
        self._raw = False
        self.resume()

    def set_raw_mode(self) -> None:
        """Deliver further input to :meth:`raw_data_received` until :meth:`set_line_mode`."""
        self._raw = True

    def set_line_mode(self, extra: bytes = b"") -> None:
        """Back to lines; ``extra`` is input the raw handler did not consume."""
        self._raw = False
        if extra:
            self._buf[:0] = extra

    def pause(self) -> None:
        """Hold further input until :meth:`resume` (used while a Deferred is pending)."""
        self._paused = True

    def resume(self) -> None:
        """Continue processing buffered and new input."""
        if self._paused and not self.closing:
            self._paused = False
            if self._transport_paused:
                self._transport_paused = False
                self.transport.resumeProducing()
            self._process()

    def count_error(self) -> bool:
        """Count a protocol error; True (and the connection closing) when there were too many."""
        self.errors += 1
        if self.errors >= self.max_errors:
            self.log.info("{peer} closed after {n} errors", peer=self.peer, n=self.errors)
            self.too_many_errors()
            self.close()
            return True
        return False

    def too_many_before_login(self) -> bool:
        """Count a command given before login; True (and the connection closing, after the
        protocol's goodbye) once there were too many."""
        self.commands_before_login += 1
        if self.commands_before_login <= self.max_commands_before_login:
            return False
        self.log.info("{peer} closed: too many commands before login", peer=self.peer)
        self.say_goodbye_before_login()
        self.close()
        return True

    def say_goodbye_before_login(self) -> None:
        """Tell the client it is closed for not logging in."""

    def start_tls(self) -> None:
        """Begin the TLS handshake, discarding any plaintext pipelined after the command."""
        assert self.tls_context is not None
        self._buf.clear()
        self.transport.startTLS(self.tls_context)
        self.secure = True

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def write_chunks(self, chunks: Iterator[bytes]) -> Deferred[None]:
        """Write ``chunks`` one at a time as the transport's buffer empties (a pull producer),
        so a large response never sits in memory whole; fires when all are written or the
        connection is gone."""
        sender = _ChunkSender(self, chunks)
        self.transport.registerProducer(sender, False)
        return sender.done

    # -- for subclasses -----------------------------------------------------------------------

    def line_received(self, line: bytes) -> None:
        raise NotImplementedError

    def raw_data_received(self, data: bytes) -> None:
        raise NotImplementedError

    def line_too_long(self) -> None:
        raise NotImplementedError

    def internal_error(self) -> None:
        raise NotImplementedError

    def too_many_errors(self) -> None:
        """Say goodbye before a close for too many errors."""


@implementer(IPullProducer)
class _ChunkSender:
    def __init__(self, protocol: LineProtocol, chunks: Iterator[bytes]) -> None:
        self.protocol, self.chunks = protocol, chunks
        self.done: Deferred[None] = Deferred()

    def resumeProducing(self) -> None:
        chunk = None if self.protocol.closing else next(self.chunks, None)
        if chunk is None:
            self._finish()
            return
        self.protocol.write(chunk)

    def stopProducing(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.done.called:
            self.protocol.transport.unregisterProducer()
            self.done.callback(None)


class SessionFactory(ServerFactory):
    """Builds one ``protocol(ctx)`` session per connection of a listener, within the
    connection limits (``max_connections`` in all, ``max_connections_per_ip`` per client),
    counted by ``counts`` (by default a table of this process; see ourmail/net/admission.py
    for counts shared by several processes)."""

    noisy = False

    def __init__(self, protocol: type[LineProtocol], ctx: Any, counts: Any = None) -> None:
        self.protocol = protocol  # type: ignore[assignment]
        self.ctx = ctx
        self.counts = ConnectionCounts(ctx.limits) if counts is None else counts
        #: Sessions accepted since the listener started (a figure for logs and tests).
        self.sessions = 0

    def buildProtocol(self, addr: Any) -> LineProtocol:
        client = str(getattr(addr, "host", "local"))
        return self.session(client, self.counts.admit(client))

    def session(self, client: str, refused: str | None) -> LineProtocol:
        """A session for ``client``: counted (``refused`` is None) or to be turned away."""
        proto = self.protocol(self.ctx)  # type: ignore[call-arg]
        proto.factory = self
        if refused is not None:
            proto.refused = refused
        else:
            self.sessions += 1
            proto.counted_as = client
        return proto

    def session_ended(self, client: str) -> None:
        self.counts.release(client)
