"""``ourmail_backend_up{backend="ldap"}`` against a real slapd: the service bind answers
while slapd runs; a wedged (SIGSTOP) or stopped slapd is down; a server with ``[ldap] url``
shows the figure in ``/metrics``."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import running_server
from metricshelp import scrape, value
from peers.slapd import SUFFIX, slapd
from storehelp import on_reactor
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from ourmail.filters.probes import probe
from ourmail.service import ldap_probe


def answers(url: str, timeout: float = 2.0) -> bool:
    one = ldap_probe(url, reactor)
    assert one.backend == "ldap"
    return on_reactor(lambda: Deferred.fromCoroutine(probe(one, reactor, timeout)))


def established_to(port: int) -> list[str]:
    """Established TCP connections to ``127.0.0.1:port`` (/proc/net/tcp, state 01)."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return [line for line in lines if line.split()[2] == wanted and line.split()[3] == "01"]


def test_slapd_up_wedged_and_stopped() -> None:
    with slapd() as directory:
        url = f"{directory.url}/{SUFFIX}?timeout=1"
        assert answers(url)
        directory.pause()
        try:
            assert not answers(url, timeout=0.5)
            # The probe that timed out aborts its connection: rounds against a wedged
            # slapd do not pile connections up.
            deadline = time.monotonic() + 5
            while established_to(directory.port):
                assert time.monotonic() < deadline, established_to(directory.port)
                time.sleep(0.05)
        finally:
            directory.resume()
        assert answers(url)
        directory.stop()
        assert not answers(url)


def test_a_server_with_ldap_reports_it(tmp_path: Path) -> None:
    with slapd() as directory:
        url = f"{directory.url}/{SUFFIX}?timeout=2"
        with running_server(tmp_path, ldap_url=url) as srv:
            deadline = time.monotonic() + 10
            while value(scrape(srv), "ourmail_backend_up", backend="ldap") != 1:
                assert time.monotonic() < deadline
                time.sleep(0.1)
