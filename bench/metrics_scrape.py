"""``/metrics`` with many connections open (issue 17: a scrape under 50 ms of server time with
2,000 open connections).  Prints figures; asserts nothing.

    .venv/bin/python bench/metrics_scrape.py                    # 2,000 idle IMAP connections
    .venv/bin/python bench/metrics_scrape.py --connections 500 --scrapes 50

One ourmail runs in this process (the reactor in a background thread) with the ``web`` and
``imap`` listeners on loopback; the connections are plain TCP sockets of this process that
read the IMAP greeting and then stay idle, spread over 50 loopback source addresses.  Two
figures per scrape:

* server time: building the exposition on the reactor thread (what the ``/metrics`` route
  does besides klein's routing: every counter, the sampled gauges, the process figures from
  /proc, which lists every open descriptor);
* round trip: ``GET /metrics`` over one kept-alive HTTPS connection from this process (client
  and server share the GIL, so this is an upper bound of what Prometheus would see).

Each is measured with no connection open first, then with all of them.
"""

from __future__ import annotations

import argparse
import http.client
import resource
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ensure_reactor, stop_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.config import SERVICES, load_settings
from ourmail.net.admission import ConnectionCounts
from ourmail.service import Server, build

SOURCES = 50


def start(data: Path, connections: int) -> Server:
    """ourmail with only ``web`` and ``imap`` listening, limits raised for the connections."""
    on = {"web", "imap"}
    settings = load_settings(
        data=str(data),
        domains=("bench.test",),
        hostname="bench.test",
        listen=tuple(
            f"{s}=tcp:0:interface=127.0.0.1" if s in on else f"{s}=none" for s in SERVICES
        ),
    )
    limits = attrs.evolve(settings.limits, max_connections=connections + 100)
    settings = attrs.evolve(settings, limits=limits, mx_processes=1)
    ensure_reactor()
    server: Server = blockingCallFromThread(reactor, build, settings, reactor)
    blockingCallFromThread(reactor, server.service.startService)
    return server


def port(server: Server, service: str) -> int:
    listening = server.listeners[service].port
    assert listening is not None
    return int(listening.getHost().port)


def open_idle(imap_port: int, n: int) -> list[socket.socket]:
    """``n`` IMAP connections that got their greeting and stay idle."""
    socks = []
    for i in range(n):
        source = f"127.0.0.{2 + i % SOURCES}"
        s = socket.create_connection(("127.0.0.1", imap_port), source_address=(source, 0))
        socks.append(s)
    for s in socks:
        s.settimeout(30)
        assert s.recv(200).startswith(b"* OK")
    return socks


def imap_counts(server: Server) -> ConnectionCounts:
    """The ``imap`` listener's connection table."""
    counts: ConnectionCounts = server.listeners["imap"].factory.counts  # type: ignore[attr-defined]
    return counts


def server_times(server: Server, scrapes: int) -> list[float]:
    """Milliseconds to build the exposition, on the reactor thread."""
    assert server.web is not None and server.web.services.metrics is not None
    metrics = server.web.services.metrics

    def timed() -> float:
        t0 = time.perf_counter()
        metrics.exposition()
        return (time.perf_counter() - t0) * 1000

    return [blockingCallFromThread(reactor, timed) for _ in range(scrapes)]


def round_trips(web_port: int, scrapes: int) -> tuple[list[float], int]:
    """Milliseconds per ``GET /metrics`` on one HTTPS connection, and the body's size."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", web_port, context=ctx, timeout=30)
    times, size = [], 0
    for _ in range(scrapes):
        t0 = time.perf_counter()
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status == 200, body[:200]
        size = len(body)
    conn.close()
    return times, size


def summary(name: str, times: list[float]) -> None:
    ordered = sorted(times)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(
        f"  {name:<12} median {statistics.median(times):6.2f} ms   p95 {p95:6.2f} ms   "
        f"max {ordered[-1]:6.2f} ms   (n={len(times)})"
    )


def measure(server: Server, label: str, scrapes: int) -> None:
    trips, size = round_trips(port(server, "web"), scrapes)
    print(f"{label} (body {size} bytes):")
    summary("server", server_times(server, scrapes))
    summary("round trip", trips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--scrapes", type=int, default=100)
    args = parser.parse_args()
    # This process holds both ends of every connection.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.connections + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    with tempfile.TemporaryDirectory() as data:
        server = start(Path(data), args.connections)
        try:
            measure(server, "no connection open", args.scrapes)
            t0 = time.perf_counter()
            socks = open_idle(port(server, "imap"), args.connections)
            opened = time.perf_counter() - t0
            held = blockingCallFromThread(reactor, lambda: imap_counts(server).total)
            print(f"{held} IMAP connections open (opened in {opened:.1f} s)")
            measure(server, f"{args.connections} idle IMAP connections", args.scrapes)
            for s in socks:
                s.close()
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
