"""An MX worker process (``python -m ourmail.mxworker``), started by ourmail/smtp/workers.py.

It assembles the same parts as the main process (ourmail/service.py) but serves only the MX
listener, on the socket inherited as descriptor 3, asking the master over descriptor 4 for
every connection (ourmail/net/admission.py).  It stops on SIGTERM, and by itself within a
second when its master is gone; SIGHUP (sent by the master after an ACME renewal, and when
the master gets one) reloads the TLS certificate and the live settings of the configuration.
Every few seconds it leaves a snapshot of its counters in ``<data>/metrics/mx-<number>.prom``
for the master's ``/metrics`` (ourmail/net/metrics.py).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import FileLogObserver, Logger, globalLogBeginner

from ourmail.config import ConfigError, Settings, load_settings
from ourmail.configreload import ConfigReload
from ourmail.livesettings import LiveSettings
from ourmail.logs.jsonlog import worker_line
from ourmail.net.admission import AdmittingFactory, CountsClient
from ourmail.net.lineproto import SessionFactory
from ourmail.net.metrics import SNAPSHOT_INTERVAL
from ourmail.secure.acmerenewal import serve_acme_certificate
from ourmail.service import assemble
from ourmail.smtp.workers import COUNTS_FD, EXIT_CONFIG, SOCKET_FD

log = Logger()


def reload_on_hangup(
    settings: Settings,
    reread: Callable[[], Settings],
    sessions: SessionFactory,
    reactor: Any,
) -> None:
    """At SIGHUP (after the certificate's handler), read the configuration again with
    ``reread`` and apply its live settings to the MX listener, quietly: the master logs the
    changes."""
    live = LiveSettings()
    live.watch(sessions)
    reload = ConfigReload(settings, reread, [live.apply], announce=False)
    certificate = signal.getsignal(signal.SIGHUP)

    def hangup(signum: int, frame: Any) -> None:
        if callable(certificate):
            certificate(signum, frame)
        reactor.callFromThread(reload.reload)

    signal.signal(signal.SIGHUP, hangup)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the MX listener on the inherited socket until the master goes."""
    from twisted.internet import reactor

    ap = argparse.ArgumentParser(prog="ourmail-mx-worker")
    ap.add_argument("--master", type=int, required=True, help="the main process's pid")
    ap.add_argument("--data", required=True)
    ap.add_argument("--config")
    ap.add_argument("--hostname", required=True)
    ap.add_argument("--domain", action="append", default=[])
    ap.add_argument("--dns", action="append", default=[])
    ap.add_argument("--family", choices=["4", "6"], default="4")
    ap.add_argument("--number", type=int, default=1, help="which worker (its snapshot's name)")
    args = ap.parse_args(argv)
    observer = FileLogObserver(sys.stdout, worker_line)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    reread = functools.partial(
        load_settings,
        data=args.data,
        config=args.config,
        domains=tuple(args.domain),
        hostname=args.hostname,
        dns_servers=tuple(args.dns),
    )
    try:  # the file may have been edited since the master read it
        settings = reread()
    except ConfigError as e:
        log.error("configuration error: {reason}", reason=str(e))
        sys.exit(EXIT_CONFIG)
    parts = assemble(settings, reactor)  # type: ignore[arg-type]
    serve_acme_certificate(settings, parts.tls, reactor)
    parts.queue.files.prepare()
    if parts.lists is not None:  # keeps list mail in the spool; the master handles it
        parts.lists.process = False
        parts.lists.startService()
    counts = CountsClient(settings.limits)
    reactor.adoptStreamConnection(  # type: ignore[attr-defined]
        COUNTS_FD, socket.AF_UNIX, Factory.forProtocol(lambda: counts)
    )
    os.close(COUNTS_FD)  # adoptStreamConnection duplicated it
    sessions = parts.factory("smtp")
    assert isinstance(sessions, SessionFactory)
    sessions.counts = counts
    reload_on_hangup(settings, reread, sessions, reactor)
    family = socket.AF_INET6 if args.family == "6" else socket.AF_INET
    reactor.adoptStreamPort(  # type: ignore[attr-defined]
        SOCKET_FD, family, AdmittingFactory(sessions, counts)
    )
    os.close(SOCKET_FD)  # adoptStreamPort duplicated it

    # The pid comes from the master: one killed while this worker was starting has already
    # made getppid() something else.
    def master_alive() -> None:
        if os.getppid() != args.master:
            log.info("master gone; stopping")
            reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(LoopingCall(master_alive).start, 1.0)  # type: ignore[attr-defined]
    snapshot = settings.data_dir / "metrics" / f"mx-{args.number}.prom"
    write = LoopingCall(deferToThread, parts.metrics.write_snapshot, snapshot)
    reactor.callWhenRunning(write.start, SNAPSHOT_INTERVAL)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
        "before", "shutdown", parts.metrics.write_snapshot, snapshot
    )
    log.info("accepting mail on the MX port (pid {pid})", pid=os.getpid())
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
