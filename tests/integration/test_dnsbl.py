"""The dnsbl check (RFC 5782) in an SMTP session, against a real ``twisted.names`` server on
loopback: listed clients refused at connect with the zone's reason, allow lists, weights,
IPv6 names, the TTL cache, and a DNS server that never answers.

Clients connect from other loopback addresses (127.0.0.2 is the RFC 5782 §5 test entry) and
from ::1, so the server sees the address the test chose."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, running_server, served_zone
from peers import dns as testdns
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.threads import blockingCallFromThread
from twisted.names import dns
from twisted.names.error import DNSServerError

from ourmail.config import DNSSettings, FilterSettings

V6_LOOPBACK = "1." + "0." * 31  # ::1 as reversed nibbles (RFC 5782 §2.4)


class CountingZone(testdns.TestZone):
    """The test zone, answering with each record's own TTL and counting the questions."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, int]] = []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        text = name.decode().lower().rstrip(".")
        self.asked.append((text, type))
        if text.endswith(".silent.test"):
            return defer.Deferred()  # never answered
        if text.endswith(".broken.test"):
            return defer.fail(DNSServerError(text))  # SERVFAIL
        if not any(key[0] == text for key in self.records):
            return super()._lookup(name, cls, type, timeout)
        answers = [
            dns.RRHeader(text, type, cls, getattr(payload, "ttl", 0) or 0, payload, auth=True)
            for payload in self.records.get((text, type), [])
        ]
        return defer.succeed((answers, [], []))


@pytest.fixture(scope="module")
def zone() -> Iterator[tuple[CountingZone, int]]:
    z = CountingZone()
    with served_zone(z) as number:
        yield z, number


def set_txt(zone: CountingZone, name: str, *strings: bytes) -> None:
    zone.set_records(name, dns.TXT, dns.Record_TXT(*strings))


def list_client(zone: CountingZone, name: str, code: str = "127.0.0.2", ttl: int = 0) -> None:
    zone.set_records(name, dns.A, dns.Record_A(code, ttl=ttl))


@pytest.fixture
def server(tmp_path: Path, zone: tuple[CountingZone, int]) -> Iterator[Any]:
    """Start a server whose chain is dnsbl with the given options."""
    started = []

    def start(dns_port: int | None = None, **options: Any) -> RunningServer:
        filters = FilterSettings(chain=("dnsbl",), options={"dnsbl": options})
        servers = (f"127.0.0.1:{dns_port or zone[1]}",)
        cm = running_server(
            tmp_path / str(len(started)),
            filters=filters,
            dns=DNSSettings(servers=servers),
        )
        started.append(cm)
        return cm.__enter__()

    yield start
    for cm in started:
        cm.__exit__(None, None, None)


def greeting(srv: RunningServer, source: str) -> tuple[int, bytes]:
    """Connect from ``source`` (a loopback address) and return the server's greeting."""
    try:
        s = smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=(source, 0))
    except smtplib.SMTPConnectError as e:
        return e.smtp_code, e.smtp_error
    code, text = s.ehlo("client.test")
    s.quit()
    return 220 if code == 250 else code, text


def test_a_listed_client_is_refused_with_the_zones_reason(server: Any, zone: Any) -> None:
    z, _ = zone
    list_client(z, "2.0.0.127.bl.test")
    set_txt(z, "2.0.0.127.bl.test", b"Listed:\x07 see\r\nhttps://bl.test/127.0.0.2 \xe9")
    srv = server(zones=[{"zone": "bl.test"}])
    code, text = greeting(srv, "127.0.0.2")
    assert code == 554
    assert text == (
        b"5.7.1 Service unavailable; client [127.0.0.2] listed by bl.test:"
        b" Listed: see https://bl.test/127.0.0.2"
    )
    assert greeting(srv, "127.0.0.3")[0] == 220  # not listed (NXDOMAIN)


def test_an_allow_list_outweighs_a_block_list(server: Any, zone: Any) -> None:
    z, _ = zone
    list_client(z, "4.0.0.127.block.test")
    list_client(z, "4.0.0.127.allow.test")
    list_client(z, "5.0.0.127.block.test")
    srv = server(zones=[{"zone": "block.test"}, {"zone": "allow.test", "weight": -5}])
    assert greeting(srv, "127.0.0.4")[0] == 220
    code, text = greeting(srv, "127.0.0.5")
    assert code == 554 and b"listed by block.test: no reason given" in text


def test_weights_threshold_and_answer_codes(server: Any, zone: Any) -> None:
    z, _ = zone
    for client in ("6", "7"):
        list_client(z, f"{client}.0.0.127.one.test")
    list_client(z, "7.0.0.127.two.test")
    list_client(z, "6.0.0.127.codes.test", "127.0.0.2")  # not one of its listed codes
    list_client(z, "7.0.0.127.codes.test", "127.0.0.4")
    zones = [
        {"zone": "one.test", "weight": 1},
        {"zone": "two.test", "weight": 1.5},
        {"zone": "codes.test", "weight": 1, "answers": ["127.0.0.4/31"]},
    ]
    srv = server(zones=zones, threshold=3)
    assert greeting(srv, "127.0.0.6")[0] == 220  # 1 (codes.test's 127.0.0.2 does not count)
    assert greeting(srv, "127.0.0.7")[0] == 554  # 1 + 1.5 + 1


def test_error_and_loopback_answers_are_not_listings(server: Any, zone: Any) -> None:
    z, _ = zone
    list_client(z, "8.0.0.127.err.test", "127.255.255.254")  # "query refused" (Spamhaus)
    list_client(z, "9.0.0.127.err.test", "127.0.0.1")  # RFC 5782 §5: never a listing
    srv = server(zones=[{"zone": "err.test"}])
    assert greeting(srv, "127.0.0.8")[0] == 220
    assert greeting(srv, "127.0.0.9")[0] == 220


def test_an_ipv6_client_is_looked_up_by_reversed_nibbles(tmp_path: Path, zone: Any) -> None:
    z, port = zone
    list_client(z, f"{V6_LOOPBACK}bl6.test")
    set_txt(z, f"{V6_LOOPBACK}bl6.test", b"IPv6 listed")
    filters = FilterSettings(chain=("dnsbl",), options={"dnsbl": {"zones": [{"zone": "bl6.test"}]}})
    with (
        running_server(
            tmp_path,
            listen={"smtp": r"tcp6:0:interface=\:\:1"},
            filters=filters,
            dns=DNSSettings(servers=(f"127.0.0.1:{port}",)),
        ) as srv,
        pytest.raises(smtplib.SMTPConnectError) as e,
    ):
        smtplib.SMTP("::1", srv.port("smtp"))
    assert e.value.smtp_code == 554
    assert e.value.smtp_error.endswith(b"client [::1] listed by bl6.test: IPv6 listed")


def test_answers_are_cached_for_their_ttl(server: Any, zone: Any) -> None:
    z, _ = zone
    list_client(z, "10.0.0.127.ttl.test", ttl=60)
    z.set_records("10.0.0.127.ttl.test", dns.TXT, dns.Record_TXT(b"cached", ttl=60))
    list_client(z, "11.0.0.127.short.test", ttl=1)
    srv = server(zones=[{"zone": "ttl.test"}, {"zone": "short.test", "weight": 0.5}])
    z.asked.clear()
    for _ in range(3):
        assert greeting(srv, "127.0.0.10")[0] == 554
        assert greeting(srv, "127.0.0.12")[0] == 220  # NXDOMAIN everywhere: cached too
    assert sorted(z.asked) == sorted(
        [
            ("10.0.0.127.ttl.test", dns.A),
            ("10.0.0.127.short.test", dns.A),
            ("10.0.0.127.ttl.test", dns.TXT),
            ("12.0.0.127.ttl.test", dns.A),
            ("12.0.0.127.short.test", dns.A),
        ]
    )
    assert greeting(srv, "127.0.0.11")[0] == 220  # weight 0.5 is below the threshold
    z.asked.clear()
    time.sleep(1.2)
    assert greeting(srv, "127.0.0.11")[0] == 220
    assert z.asked == [("11.0.0.127.short.test", dns.A)]  # its 1 s TTL ran out; ttl.test's not


def test_a_long_txt_reason_is_cut_short(server: Any, zone: Any) -> None:
    z, _ = zone
    list_client(z, "13.0.0.127.long.test")
    set_txt(z, "13.0.0.127.long.test", *[b"x" * 255] * 8)  # over 512 bytes: truncated, then TCP
    srv = server(zones=[{"zone": "long.test"}])
    code, text = greeting(srv, "127.0.0.13")
    assert code == 554 and text.endswith(b"long.test: " + b"x" * 197 + b"...")


def test_a_dns_server_that_never_answers_lets_the_client_in(server: Any) -> None:
    silent = blockingCallFromThread(
        reactor, reactor.listenUDP, 0, DatagramProtocol(), interface="127.0.0.1"
    )
    try:
        srv = server(dns_port=silent.getHost().port, zones=[{"zone": "bl.test"}], query_timeout=1)
        started = time.monotonic()
        assert greeting(srv, "127.0.0.2")[0] == 220
        assert time.monotonic() - started < 2.5
    finally:
        blockingCallFromThread(reactor, silent.stopListening)


def test_a_silent_or_failing_zone_counts_as_not_listed(server: Any, zone: Any) -> None:
    z, _ = zone
    list_client(z, "15.0.0.127.bl2.test")
    set_txt(z, "15.0.0.127.bl2.test", b"bl2 says so")
    zones = [{"zone": "silent.test"}, {"zone": "broken.test"}, {"zone": "bl2.test"}]
    srv = server(zones=zones, query_timeout=1)
    for client, code in (("127.0.0.15", 554), ("127.0.0.16", 220)):
        started = time.monotonic()
        reply = greeting(srv, client)
        assert reply[0] == code and time.monotonic() - started < 2.5
    assert greeting(srv, "127.0.0.15")[1].endswith(b"listed by bl2.test: bl2 says so")


def test_junk_action_files_a_listed_clients_mail_into_junk(server: Any, zone: Any) -> None:
    z, _ = zone
    list_client(z, "14.0.0.127.junk.test")
    list_client(z, "14.0.0.127.wl.test", "127.0.10.1")
    zones = [{"zone": "junk.test", "weight": 2}, {"zone": "wl.test", "weight": -0.5}]
    srv = server(zones=zones, action="junk")
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=("127.0.0.14", 0)) as s:
        s.sendmail("bob@else.test", [srv.user], b"Subject: hi\r\n\r\nHi\r\n")
    junk = srv.server.store.shards.user_dir(srv.user) / ".Junk"
    (message,) = [p.read_bytes() for sub in ("new", "cur") for p in (junk / sub).glob("*")]
    assert b"dnsbl=fail dns.zone=junk.test policy.ip=127.0.0.2;" in message
    assert b"dnswl=pass dns.zone=wl.test policy.ip=127.0.10.1" in message  # RFC 8904
    assert b"X-Ourmail-Junk: dnsbl: [127.0.0.14] listed by junk.test" in message
