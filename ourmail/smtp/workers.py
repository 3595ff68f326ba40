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
* Per-address connection limits and other in-memory counters apply per process.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ourmail.config import Settings

log = Logger()

#: The descriptor the shared listening socket has in a worker.
SOCKET_FD = 3


class WorkerProtocol(ProcessProtocol):
    """Relays one worker's output into the master's log."""

    def __init__(self, workers: MXWorkers, number: int) -> None:
        self.workers = workers
        self.number = number
        self._partial = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if line.strip():
                log.info(
                    "mx worker {n}: {line}",
                    n=self.number,
                    line=line.decode("utf-8", "replace")[:2000],
                )
        if len(self._partial) > 8192:
            self._partial = b""

    errReceived = outReceived

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

    def startService(self) -> None:
        super().startService()
        port = self.listener.port
        if port is None or not hasattr(port, "fileno"):
            log.warn("smtp.mx_processes needs a TCP listener for smtp; running one process")
            return
        for number in range(1, self.settings.mx_processes):
            self._spawn(number)

    def _arguments(self) -> list[str]:
        s = self.settings
        family = "6" if ":" in self.listener.port.getHost().host else "4"
        args = [sys.executable, "-m", "ourmail.smtp.workers", "--data", str(s.data_dir)]
        if s.config_path is not None:
            args += ["--config", str(s.config_path)]
        args += ["--hostname", s.hostname, "--family", family]
        for domain in s.domains:
            args += ["--domain", domain]
        return args

    def _spawn(self, number: int) -> None:
        if not self.running:
            return
        proto = WorkerProtocol(self, number)
        fd = self.listener.port.fileno()
        self.reactor.spawnProcess(
            proto,
            sys.executable,
            self._arguments(),
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r", SOCKET_FD: fd},
        )
        self._workers[number] = proto

    def worker_ended(self, number: int, reason: Failure) -> None:
        self._workers.pop(number, None)
        if self.running:
            log.warn(
                "mx worker {n} ended ({why}); starting it again",
                n=number,
                why=reason.getErrorMessage(),
            )
            self.reactor.callLater(1.0, self._spawn, number)  # type: ignore[attr-defined]

    def stopService(self) -> Deferred[object]:
        super().stopService()
        ended = []
        for proto in list(self._workers.values()):
            if proto.transport is not None:
                proto.transport.signalProcess("TERM")
            ended.append(proto.ended)
        return defer.DeferredList(ended)


def main(argv: Sequence[str] | None = None) -> None:
    """A worker process: serve the MX listener on the inherited socket until the master goes."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall
    from twisted.logger import FileLogObserver, formatEvent, globalLogBeginner

    from ourmail.config import load_settings
    from ourmail.service import assemble

    ap = argparse.ArgumentParser(prog="ourmail-mx-worker")
    ap.add_argument("--data", required=True)
    ap.add_argument("--config")
    ap.add_argument("--hostname", required=True)
    ap.add_argument("--domain", action="append", default=[])
    ap.add_argument("--family", choices=["4", "6"], default="4")
    args = ap.parse_args(argv)
    observer = FileLogObserver(sys.stdout, lambda event: (formatEvent(event) or "") + "\n")
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    settings = load_settings(
        data=args.data, config=args.config, domains=tuple(args.domain), hostname=args.hostname
    )
    parts = assemble(settings, reactor)  # type: ignore[arg-type]
    parts.queue.files.prepare()
    family = socket.AF_INET6 if args.family == "6" else socket.AF_INET
    reactor.adoptStreamPort(SOCKET_FD, family, parts.factory("smtp"))  # type: ignore[attr-defined]
    os.close(SOCKET_FD)  # adoptStreamPort duplicated it
    master = os.getppid()

    def master_alive() -> None:
        if os.getppid() != master:
            log.info("master gone; stopping")
            reactor.stop()  # type: ignore[attr-defined]

    LoopingCall(master_alive).start(1.0)
    log.info("accepting mail on the MX port (pid {pid})", pid=os.getpid())
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
