"""Shared by the benchmarks: one ourmail, in this process, serving one service on loopback."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.config import SERVICES, load_settings
from ourmail.service import Server, build

_reactor_thread: threading.Thread | None = None


def ensure_reactor() -> None:
    """Run the reactor in a background thread (once per process)."""
    global _reactor_thread
    if _reactor_thread is None:
        _reactor_thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        _reactor_thread.start()


def start_server(data: Path, service: str, **changes: Any) -> tuple[Server, int]:
    """Start ourmail with only ``service`` listening (on an ephemeral loopback port), the
    reactor in a background thread; returns the server and the port.  ``changes`` override
    Settings fields."""
    others = tuple(f"{s}=none" for s in SERVICES if s != service)
    settings = load_settings(
        data=str(data),
        domains=("bench.test",),
        hostname="bench.test",
        listen=(f"{service}=tcp:0:interface=127.0.0.1", *others),
    )
    settings = attrs.evolve(settings, **changes)
    ensure_reactor()
    server: Server = blockingCallFromThread(reactor, build, settings, reactor)
    blockingCallFromThread(reactor, server.service.startService)
    listener = server.listeners[service].port
    assert listener is not None
    return server, listener.getHost().port


def stop_server(server: Server) -> None:
    blockingCallFromThread(reactor, server.service.stopService)
