"""The probes behind ``ourmail_backend_up`` (ourmail/filters/probes.py) against the real
back-ends: clamd (``tests/peers/clamd.py``), spamd and rspamd, up, stopped, silent or
answering garbage."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from tempfile import mkdtemp

from clamdhelp import fake_clamd_fixture  # noqa: F401 - a fixture
from peers import clamd as clamd_peer
from peers.rspamd import Rspamd, rspamd  # noqa: F401 (a fixture)
from peers.spamd import Spamd, spamd  # noqa: F401 (a fixture)
from storehelp import on_reactor
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from ourmail.filters.antivirus import AntivirusCheck
from ourmail.filters.clamd import ClamdClient
from ourmail.filters.probes import Probe, probe, probe_all, probes_for
from ourmail.filters.rspamd import RspamdClient
from ourmail.filters.spam import SpamCheck
from ourmail.filters.spamc import SpamdClient
from ourmail.filters.spamprefs import SpamPrefs


def answers(one: Probe, timeout: float = 2.0) -> bool:
    return on_reactor(lambda: Deferred.fromCoroutine(probe(one, reactor, timeout)))


def clamd_probe(address: str) -> Probe:
    check = AntivirusCheck(ClamdClient(reactor, address), reactor, "mail.example.test")
    [found] = probes_for([check], reactor)
    assert found.backend == "clamd"
    return found


def test_clamd_answers_ping_over_tcp_and_its_unix_socket() -> None:
    running = clamd_peer.shared()
    assert answers(clamd_probe(running.address))
    assert answers(clamd_probe(running.socket))


def test_clamd_stopped_or_silent_is_down() -> None:
    with clamd_peer.clamd() as own:
        probe_ = clamd_probe(own.address)
        assert answers(probe_)
        own.pause()  # the kernel accepts the connection, nothing answers
        try:
            assert not answers(probe_, timeout=0.5)
            # The probe that timed out closes its connection (on the next turns of the
            # reactor): none is left open behind it, though clamd cannot close it.
            deadline = time.monotonic() + 5
            while _connections_to(own.port):
                assert time.monotonic() < deadline, _connections_to(own.port)
                time.sleep(0.05)
        finally:
            own.resume()
        own.stop()
        assert not answers(probe_)


def test_something_else_on_clamds_port_is_down(fake_clamd: Callable[..., str]) -> None:
    assert not answers(clamd_probe(fake_clamd(lambda fake, data: b"HELLO\0")))
    assert not answers(clamd_probe(fake_clamd(lambda fake, data: None)))  # closes at once
    assert not answers(clamd_probe(fake_clamd(lambda fake, data: b"P" * 200)))  # no end


def test_spamd_answers_ping_and_a_closed_port_does_not(spamd: Spamd) -> None:  # noqa: F811
    [found] = probes_for([_spam_check(SpamdClient(reactor, spamd.address))], reactor)
    assert found.backend == "spamd"
    assert answers(found)
    closed = SpamdClient(reactor, f"127.0.0.1:{clamd_peer.free_port()}")
    [down] = probes_for([_spam_check(closed)], reactor)
    assert not answers(down)


def test_rspamd_answers_its_ping(rspamd: Rspamd) -> None:  # noqa: F811
    [found] = probes_for([_spam_check(RspamdClient(reactor, rspamd.url))], reactor)
    assert found.backend == "rspamd"
    assert answers(found)
    # The controller's port is not the normal worker's; a closed port is down.
    closed = f"http://127.0.0.1:{clamd_peer.free_port()}"
    assert not answers(Probe("rspamd", RspamdClient(reactor, closed).ping))


def test_a_round_records_each_backend() -> None:
    seen: list[tuple[str, bool]] = []
    good = clamd_probe(clamd_peer.shared().address)
    closed = SpamdClient(reactor, f"127.0.0.1:{clamd_peer.free_port()}")
    [bad] = probes_for([_spam_check(closed)], reactor)
    on_reactor(
        lambda: Deferred.fromCoroutine(
            probe_all([good, bad], reactor, lambda b, up: seen.append((b, up)))
        )
    )
    assert seen == [("clamd", True), ("spamd", False)]


def _spam_check(scanner: SpamdClient | RspamdClient) -> SpamCheck:
    prefs = SpamPrefs(Path(mkdtemp(prefix="ourmail-probe-")) / "prefs.sqlite")
    return SpamCheck(scanner, prefs, reactor)


def _connections_to(port: int) -> list[str]:
    """This process's TCP connections to ``port`` on loopback that are still established
    (from /proc/net/tcp: state 01)."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return [line for line in lines if line.split()[2] == wanted and line.split()[3] == "01"]
