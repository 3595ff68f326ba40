"""MTA-STS policies (ourmail/queue/mtasts.py): parsing (RFC 8461 §3), MX matching (§4.1), and
the fetch and cache against the loopback DNS server and a real HTTPS server, including peers
that never answer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import dns_zone
from storehelp import on_reactor
from stshelp import POLICY, PolicyServer, TestCA
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.names import client, dns

from ourmail.queue.mtasts import (
    MAX_MAX_AGE,
    Policy,
    PolicyError,
    PolicyStore,
    parse_policy,
    parse_txt,
)
from ourmail.queue.mx import MXResolver


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
        (["v=STSv1;id=abc"], "abc"),
        (["v=spf1 -all", "v=STSv1; id=abc; ext=1"], "abc"),
        (["v=STSv1; id=abc", "v=STSv1; id=def"], None),  # §3.1: several records: none
        (["v=STSv1; id=" + "a" * 33], None),
        (["v=STSv1; id=a-b"], None),
        (["v=STSv1"], None),
        (["v=STSv2; id=abc"], None),
        ([], None),
    ],
)
def test_txt_record(texts: list[str], expected: str | None) -> None:
    assert parse_txt(texts) == expected


def test_policy_fields() -> None:
    body = b"version: STSv1\nmode: testing\nmx: mail.example.test\nmx: *.example.net\n"
    body += b"max_age: 604800\nfuture: whatever\n"
    policy = parse_policy("example.test", "id1", body, 100.0)
    assert (policy.mode, policy.mx, policy.max_age, policy.expires) == (
        "testing",
        ("mail.example.test", "*.example.net"),
        604800,
        604900.0,
    )
    assert policy.lines[0] == "version: STSv1" and len(policy.lines) == 6
    capped = parse_policy("e.test", "i", POLICY.replace(b"86400", b"9999999999"), 0)
    assert capped.max_age == MAX_MAX_AGE
    assert parse_policy("e.test", "i", b"version: STSv1\nmode: none\nmax_age: 1\n", 0).mx == ()


@pytest.mark.parametrize(
    "body",
    [
        POLICY.replace(b"STSv1", b"STSv2"),
        POLICY.replace(b"mode: enforce\r\n", b""),
        POLICY.replace(b"enforce", b"strict"),
        POLICY.replace(b"max_age: 86400\r\n", b""),
        POLICY.replace(b"86400", b"-1"),
        POLICY.replace(b"mx: mx.remote.test\r\n", b""),
        POLICY.replace(b"mx.remote.test", b"mx..remote.test"),
        POLICY.replace(b"mx.remote.test", b"*.*.remote.test"),
        POLICY + b"version: STSv1\r\n",
        POLICY + b"no colon here\r\n",
        POLICY + b"x" * (64 * 1024),
        "version: STSv1\nmode: enforce\nmx: é.test\nmax_age: 1\n".encode(),
        b"",
    ],
)
def test_invalid_policies(body: bytes) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy("remote.test", "id", body, 0)
    assert e.value.kind == "invalid"


def test_mx_matching() -> None:
    policy = Policy("e.test", "i", "enforce", ("mail.e.test", "*.mx.e.test"), 1, ())
    assert policy.matches("mail.e.test") and policy.matches("MAIL.E.TEST.")
    assert policy.matches("a.mx.e.test")
    assert not policy.matches("a.b.mx.e.test")  # §4.1: the wildcard is one label
    assert not policy.matches("mx.e.test")
    assert not policy.matches("xmail.e.test")


# -- fetch and cache, for real -------------------------------------------------------------


@pytest.fixture
def https(tmp_path: Path) -> Iterator[tuple[PolicyServer, TestCA, int]]:
    zone, _ = dns_zone()
    ca = TestCA(tmp_path / "ca")
    server = PolicyServer()
    port = server.start(*ca.issue("mta-sts.sts.test"))
    zone.set_address("mta-sts.sts.test", "127.0.0.2")
    zone.set_records("_mta-sts.sts.test", dns.TXT, dns.Record_TXT(b"v=STSv1; id=one", ttl=0))
    yield server, ca, port
    server.stop()
    zone.clear("mta-sts.sts.test")
    zone.clear("_mta-sts.sts.test")


def store(
    tmp_path: Path, port: int, ca: TestCA, timeout: float = 5, dns_port: int = 0
) -> PolicyStore:
    resolver = client.Resolver(servers=[("127.0.0.1", dns_port or dns_zone()[1])], timeout=(1,))
    return PolicyStore(
        tmp_path / "cache", MXResolver(resolver), reactor, reactor, port, str(ca.ca_file), timeout
    )


def test_fetch_cache_and_restart(tmp_path: Path, https: tuple[PolicyServer, TestCA, int]) -> None:
    server, ca, port = https
    first = store(tmp_path, port, ca)
    both = on_reactor(
        lambda: defer.gatherResults([first.policy("sts.test"), first.policy("sts.test")])
    )
    assert both[0] == both[1] and both[0].mode == "enforce"
    assert server.hits == 1  # two connections at once share one fetch
    # A restarted queue reads the cache from disk, and keeps it when the TXT record goes.
    dns_zone()[0].clear("_mta-sts.sts.test")
    again = on_reactor(store(tmp_path, port, ca).policy, "sts.test")
    assert again == both[0] and server.hits == 1


def test_expired_policy_is_not_used(
    tmp_path: Path, https: tuple[PolicyServer, TestCA, int]
) -> None:
    server, ca, port = https
    server.body = POLICY.replace(b"86400", b"0")
    sts = store(tmp_path, port, ca)
    assert on_reactor(sts.policy, "sts.test") is not None
    dns_zone()[0].clear("_mta-sts.sts.test")
    assert on_reactor(sts.policy, "sts.test") is None


@pytest.mark.parametrize("size", [1000, 200_000])
def test_streamed_policy_body_is_bounded(
    tmp_path: Path, https: tuple[PolicyServer, TestCA, int], size: int
) -> None:
    """A body without Content-Length is read only up to 64 KiB (§3.2), then refused."""
    server, ca, port = https
    server.chunked = True
    server.body = POLICY + b"# padding: x\n" * (size // 13)
    sts = store(tmp_path, port, ca)
    policy = on_reactor(sts.policy, "sts.test")
    if size < 65536:
        assert policy is not None and policy.mode == "enforce"
    else:
        assert policy is None and sts.failures["sts.test"].kind == "invalid"


def test_untrusted_policy_server_is_no_policy(
    tmp_path: Path, https: tuple[PolicyServer, TestCA, int]
) -> None:
    _, _, port = https
    sts = store(tmp_path, port, TestCA(tmp_path / "other-ca"))
    assert on_reactor(sts.policy, "sts.test") is None
    assert sts.failures["sts.test"].kind in ("webpki", "fetch")


def test_policy_server_that_never_answers(
    tmp_path: Path, https: tuple[PolicyServer, TestCA, int]
) -> None:
    _, ca, _ = https
    silent = on_reactor(
        lambda: reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.2")
    )
    try:
        sts = store(tmp_path, silent.getHost().port, ca, timeout=1)
        started = time.monotonic()
        assert on_reactor(sts.policy, "sts.test") is None
        assert time.monotonic() - started < 5
        assert sts.failures["sts.test"].kind == "fetch"
    finally:
        on_reactor(silent.stopListening)


def test_dns_server_that_never_answers(
    tmp_path: Path, https: tuple[PolicyServer, TestCA, int]
) -> None:
    _, ca, port = https
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        sts = store(tmp_path, port, ca, dns_port=mute.getsockname()[1])
        started = time.monotonic()
        assert on_reactor(sts.policy, "sts.test") is None
        assert time.monotonic() - started < 5
