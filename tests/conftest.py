"""Shared fixtures: a reactor in a background thread, and a fresh ourmail on loopback ports.

Integration tests drive the server with blocking stdlib clients (smtplib, imaplib, poplib) from
the test thread while the reactor runs in its own thread, just as real clients would.
"""

from __future__ import annotations

import contextlib
import io
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from peers import dns as testdns
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.admin.cli import main as admin_main
from ourmail.auth.passwords import hash_password
from ourmail.config import SERVICES, DNSSettings, QueueSettings, ThrottleSettings, load_settings
from ourmail.service import Server, build

PASSWORD = "correct horse battery staple"

_thread: threading.Thread | None = None
_dns: tuple[testdns.TestZone, int] | None = None


def _ensure_reactor() -> None:
    global _thread
    if _thread is None:
        _thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        _thread.start()


def dns_zone() -> tuple[testdns.TestZone, int]:
    """The tests' DNS server (started once) and its UDP port on 127.0.0.1."""
    global _dns
    _ensure_reactor()
    if _dns is None:
        zone = testdns.TestZone()
        _, port = blockingCallFromThread(reactor, testdns.start, zone)
        _dns = (zone, port)
    return _dns


@contextlib.contextmanager
def served_zone(zone: testdns.TestZone, truncate_at: int | None = None) -> Iterator[int]:
    """``zone`` served over UDP and TCP on 127.0.0.1 (``truncate_at``: UDP answers over that
    size are truncated, RFC 1035 §4.2) until the block ends; yields the port."""
    _ensure_reactor()
    ports, number = blockingCallFromThread(reactor, testdns.start_udp_tcp, zone, truncate_at)
    try:
        yield number
    finally:
        for port in ports:
            blockingCallFromThread(reactor, port.stopListening)


class RunningServer:
    """A started ourmail with its ports, data directory and a test user."""

    def __init__(self, server: Server, data: Path, domain: str) -> None:
        self.server = server
        self.data = data
        self.domain = domain
        self.user = f"alice@{domain}"
        self.password = PASSWORD

    def port(self, service: str) -> int:
        listener = self.server.listeners[service]
        assert listener.port is not None
        return listener.port.getHost().port

    def add_user(self, address: str, password: str = PASSWORD) -> None:
        self.server.accounts.add_user(address, hash_password(password))


def cli(srv: RunningServer, *args: str) -> int:
    """``ourmail ARGS…`` on the server's data folder, in this process, with no input; its
    exit status."""
    sys.stdin = io.StringIO("")
    try:
        return admin_main(["--data", str(srv.data), *args])
    finally:
        sys.stdin = sys.__stdin__


def client_tls() -> ssl.SSLContext:
    """A client context that accepts the self-signed test certificate (TLS 1.2+ only)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@contextlib.contextmanager
def running_server(
    tmp_path: Path,
    listen: dict[str, str] | None = None,
    domain: str = "example.test",
    hostname: str = "mail.example.test",
    queue_clock: Any = None,
    retention: Any = None,
    checkers: Any = (),
    realm: Any = None,
    learner: Any = None,
    **changes: Any,
) -> Iterator[RunningServer]:
    """A fresh server on loopback ports (``listen`` overrides some); ``changes`` override
    Settings fields.  Its outbound queue resolves through the tests' DNS server only."""
    _ensure_reactor()
    endpoints = {svc: "tcp:0:interface=127.0.0.1" for svc in SERVICES} | (listen or {})
    settings = load_settings(
        data=str(tmp_path / "data"),
        domains=(domain,),
        hostname=hostname,
        listen=tuple(f"{svc}={ep}" for svc, ep in endpoints.items()),
    )
    queue = changes.pop("queue", QueueSettings())
    queue = attrs.evolve(queue, dns_servers=(f"127.0.0.1:{dns_zone()[1]}",))
    # The filter chain's lookups too: tests never ask DNS servers off this machine.
    changes.setdefault("dns", DNSSettings(servers=(f"127.0.0.1:{dns_zone()[1]}",)))
    throttle = changes.pop("auth_throttle", ThrottleSettings(base_delay=0.05))
    # In-process tests reach into the listeners' factories: no MX workers unless asked for.
    changes.setdefault("mx_processes", 1)
    settings = attrs.evolve(settings, auth_throttle=throttle, queue=queue, **changes)

    def start() -> Server:
        server = build(
            settings,
            reactor,
            checkers=checkers,
            realm=realm,
            queue_clock=queue_clock,
            retention=retention,
            learner=learner,
        )
        server.service.startService()
        return server

    server = blockingCallFromThread(reactor, start)
    running = RunningServer(server, settings.data_dir, domain)
    if not server.accounts.has_user(running.user):  # a restored data folder has it
        running.add_user(running.user)
    try:
        yield running
    finally:
        blockingCallFromThread(reactor, server.service.stopService)


@pytest.fixture(scope="module", autouse=True)
def _module_dns_records() -> Iterator[None]:
    """The tests' DNS server is one per process: records a module sets (a p=reject DMARC
    policy for example.test, say) are taken away when it ends, so no other module sees them."""
    before = _dns[0].snapshot() if _dns is not None else ({}, {}, 0)
    yield
    if _dns is not None:
        _dns[0].restore(before)


@pytest.fixture
def mailserver(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as server:
        yield server


@pytest.fixture
def no_system_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyspf's own resolver (dnspython, the system's servers) is never asked: the SPF tests
    use it (``pytestmark``) so every lookup must go through ours."""
    from ourmail.filters import spfdns

    def forbidden(*args: object) -> None:
        raise AssertionError(f"pyspf used its own resolver for {args}")

    spfdns.install()
    monkeypatch.setattr(spfdns, "_original", forbidden)
