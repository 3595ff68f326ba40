"""More processes on the MX port, so inbound mail can use every CPU core.

One Python process runs the reactor on one core.  With ``[smtp] mx_processes = N`` the server
(the master) listens on the MX port as usual, then starts N-1 worker processes that accept
connections on the very same socket (handed over as file descriptor 3 and adopted with
``IReactorSocket.adoptStreamPort``); the kernel gives each new connection to one of them.

* A worker runs only the MX listener.  It delivers into the same store (whose folder locks and
  journals are made for several writers) and queues outbound mail (forwarding aliases) into the
  same queue directory; only the master's queue runner delivers the queue.
* Worker output goes to the master's log, each line tagged with the worker's number.
* A worker that dies is started again after a second; a worker whose master is gone (even after
  kill -9) stops by itself within a second.
* The connection limits (in all and per client address) are the master's: each worker asks it
  over a socket pair handed over as descriptor 4 (ourmail/net/admission.py).
* The worker process itself is ourmail/mxworker.py (it assembles a server the way
  ourmail/service.py does, which starts these workers).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure

from ourmail.config import Settings
from ourmail.logs.jsonlog import relayed
from ourmail.net.admission import CountsServerFactory

log = Logger()

#: The descriptor the shared listening socket has in a worker.
SOCKET_FD = 3
#: The descriptor of a worker's end of its socket pair to the master (connection counts).
COUNTS_FD = 4
#: The worker process, run as ``python -m``.
WORKER_MODULE = "ourmail.mxworker"
#: A worker's exit status when it cannot read the configuration file (sysexits.h EX_CONFIG):
#: started again at the next SIGHUP rather than every second.
EXIT_CONFIG = 78
#: How a worker's line saying it accepts mail begins (ourmail/mxworker.py).
READY = b"accepting mail on the MX port"


class WorkerProtocol(ProcessProtocol):
    """Relays one worker's output into the master's log."""

    def __init__(self, workers: MXWorkers, number: int) -> None:
        self.workers = workers
        self.number = number
        self._partial = b""
        self._partial_err = b""
        self.ended: Deferred[None] = Deferred()
        #: Whether the worker said it accepts mail (its SIGHUP handler is in place by then).
        self.ready = False
        self._hangup_pending = False

    def hangup(self) -> None:
        """SIGHUP (load the TLS certificate again) now, or once the worker is ready: before,
        the signal would end it."""
        if not self.ready:
            self._hangup_pending = True
        elif self.transport is not None:
            try:
                self.transport.signalProcess("HUP")
            except (ProcessExitedAlready, OSError) as e:  # it ended: it starts again anew
                log.warn(
                    "mx worker {n} not told to reload its certificate: {why}",
                    n=self.number,
                    why=str(e) or type(e).__name__,
                )

    def outReceived(self, data: bytes) -> None:
        self._partial = self._lines(self._partial + data, structured=True)

    def errReceived(self, data: bytes) -> None:
        # Its own partial line: a write to stderr must not complete one on stdout.  Only
        # standard output carries structured events (ourmail/mxworker.py writes them there).
        self._partial_err = self._lines(self._partial_err + data, structured=False)

    def _lines(self, data: bytes, structured: bool) -> bytes:
        """Relay the whole lines of ``data``; the rest of it (an unfinished line)."""
        *lines, partial = data.split(b"\n")
        for line in lines:
            if line.startswith(READY) and not self.ready:
                self.ready = True
                if self._hangup_pending:
                    self._hangup_pending = False
                    self.hangup()
            event = relayed(line, self.number) if structured and line[:1] == b"{" else None
            if event is not None:  # a structured event (ourmail/logs): its fields kept
                globalLogPublisher(event)
            elif line.strip():
                log.info(
                    "mx worker {n}: {line}",
                    n=self.number,
                    line=line.decode("utf-8", "replace")[:2000],
                )
        # A transaction's JSON line may name 50 recipients.  A longer line is cut: its rest
        # is relayed as text after "...", never taken for an event of its own.
        return b"..." if len(partial) > 65536 else partial

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.workers.worker_ended(self.number, reason)


class MXWorkers(Service):
    """Starts, restarts and stops the worker processes of the MX listener."""

    name = "mx-workers"

    def __init__(self, settings: Settings, listener: Any, reactor: IReactorProcess) -> None:
        self.settings = settings
        self.listener = listener
        self.reactor = reactor
        self._workers: dict[int, WorkerProtocol] = {}
        #: Workers that refused the configuration file, waiting for the next SIGHUP.
        self._refused: set[int] = set()
        #: What to call when a worker ends (before it is started again).
        self.ended: list[Callable[[], None]] = []
        #: What to call when a worker that ended on its own is started again.
        self.restarted: list[Callable[[], None]] = []

    def startService(self) -> None:
        super().startService()
        port = self.listener.port
        tcp = port is not None and isinstance(port.getHost(), IPv4Address | IPv6Address)
        if not (tcp and hasattr(port, "fileno")):
            log.info("the smtp listener is not TCP: one process accepts mail on it")
            return
        for number in range(1, self.settings.mx_processes):
            self._spawn(number)

    def _arguments(self) -> list[str]:
        s = self.settings
        family = "6" if ":" in self.listener.port.getHost().host else "4"
        args = [sys.executable, "-m", WORKER_MODULE, "--master", str(os.getpid())]
        args += ["--data", str(s.data_dir)]
        if s.config_path is not None:
            args += ["--config", str(s.config_path)]
        args += ["--hostname", s.hostname, "--family", family]
        for domain in s.domains:
            args += ["--domain", domain]
        for server in s.dns.servers:  # as the main process has them (file or command line)
            args += ["--dns", server]
        return args

    def _spawn(self, number: int) -> None:
        if not self.running:
            return
        proto = WorkerProtocol(self, number)
        fd = self.listener.port.fileno()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:
            self.reactor.adoptStreamConnection(  # type: ignore[attr-defined]
                ours.fileno(), socket.AF_UNIX, CountsServerFactory(self.listener.factory.counts)
            )
            self.reactor.spawnProcess(
                proto,
                sys.executable,
                [*self._arguments(), "--number", str(number)],
                env=dict(os.environ),
                childFDs={0: "w", 1: "r", 2: "r", SOCKET_FD: fd, COUNTS_FD: theirs.fileno()},
            )
        self._workers[number] = proto

    def hangup(self) -> None:
        """SIGHUP to every worker: each loads the TLS certificate again (a new one from ACME);
        those that refused the configuration file start again."""
        for proto in self._workers.values():
            proto.hangup()
        for number in sorted(self._refused):
            self._spawn(number)
        self._refused.clear()

    def worker_ended(self, number: int, reason: Failure) -> None:
        self._workers.pop(number, None)
        for call in self.ended:
            call()
        if self.running and getattr(reason.value, "exitCode", None) == EXIT_CONFIG:
            log.error(
                "mx worker {n} refused the configuration file; it starts again at the next "
                "SIGHUP (fix the file first)",
                n=number,
            )
            self._refused.add(number)
        elif self.running:
            log.warn(
                "mx worker {n} ended ({why}); starting it again",
                n=number,
                why=reason.getErrorMessage(),
            )
            for call in self.restarted:
                call()
            self.reactor.callLater(1.0, self._spawn, number)  # type: ignore[attr-defined]

    def stopService(self) -> Deferred[object]:
        """SIGTERM to every worker; fires once all have ended."""
        super().stopService()
        workers = list(self._workers.values())
        for proto in workers:
            if proto.transport is not None:
                proto.transport.signalProcess("TERM")
        # A reactor without signal handlers (one in a thread: tests, benchmarks) hears of no
        # SIGCHLD, and a worker that exits just after closing its pipes stays a zombie: look.
        reaper = LoopingCall(self._reap, workers)
        reaper.clock = self.reactor  # type: ignore[assignment]
        reaper.start(0.1, now=False)

        def stop_reaping(result: object) -> object:
            reaper.stop()
            return result

        return defer.DeferredList([proto.ended for proto in workers]).addBoth(stop_reaping)

    @staticmethod
    def _reap(workers: list[WorkerProtocol]) -> None:
        for proto in workers:
            if not proto.ended.called and proto.transport is not None:
                proto.transport.reapProcess()  # type: ignore[attr-defined]
