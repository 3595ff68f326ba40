"""DKIM verification (ourmail/filters/dkim.py) against the loopback twisted.names server, with
signatures made by Perl Mail::DKIM, OpenDKIM and dkimpy."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import dns_zone, running_server
from dkimpeers import ed25519_key, mail_dkim_sign, opendkim_sign, publish, rsa_key, sign
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.threads import blockingCallFromThread
from twisted.names import dns

from ourmail.config import DNSSettings, FilterSettings
from ourmail.filters.dkim import factory
from ourmail.interfaces import AuthResult, FilterEnvironment, MailContext
from ourmail.net.dns import make_resolver

MSG = (
    b"From: Bob <bob@{d}>\r\nTo: alice@example.test\r\nSubject: Minutes\r\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nThe minutes are attached.\r\n"
)


def message(domain: str) -> bytes:
    return MSG.replace(b"{d}", domain.encode())


def make_check(tmp_path: Path, port: int | None = None, **options: Any) -> Any:
    port = port or dns_zone()[1]
    env = FilterEnvironment(
        resolver=make_resolver([f"127.0.0.1:{port}"]),
        reactor=reactor,
        hostname="mail.example.test",
        domains=("example.test",),
        state_dir=tmp_path,
    )
    return factory.build(options, env)


def verify(tmp_path: Path, content: bytes, **options: Any) -> tuple[list[AuthResult], Any]:
    check = make_check(tmp_path, **options)
    context = MailContext("192.0.2.1", content=content)
    verdict = blockingCallFromThread(reactor, check.check, "data", context)
    assert verdict.action == "accept"
    return list(verdict.results), context.notes["dkim"]


def key_domain(name: str, algorithm: str = "rsa") -> str:
    zone, _ = dns_zone()
    domain = f"{name}.dkim.test"
    record = ed25519_key()[1] if algorithm == "ed25519" else rsa_key()[1]
    publish(zone, domain, "sel", record)
    return domain


@pytest.mark.parametrize("method", ["relaxed", "simple"])
def test_mail_dkim_signatures_pass(tmp_path: Path, method: str) -> None:
    domain = key_domain(f"perl-{method}")
    signed = mail_dkim_sign(message(domain), domain, "sel", method, tmp_path)
    (result,), notes = verify(tmp_path, signed)
    assert result == AuthResult(
        "dkim", "pass", "", (("header.d", domain), ("header.s", "sel"), ("header.a", "rsa-sha256"))
    )
    assert notes == [{"result": "pass", "domain": domain, "selector": "sel"}]


def test_ed25519_passes_and_both_signatures_are_judged(tmp_path: Path) -> None:
    rsa_domain = key_domain("both-rsa")
    ed_domain = key_domain("both-ed", "ed25519")
    signed = sign(message(ed_domain), ed_domain, "sel", "ed25519-sha256")
    signed = sign(signed, rsa_domain, "sel", canonicalize=(b"simple", b"simple"))
    results, _ = verify(tmp_path, signed)
    assert [(r.result, r.properties[0][1], r.properties[2][1]) for r in results] == [
        ("pass", rsa_domain, "rsa-sha256"),
        ("pass", ed_domain, "ed25519-sha256"),
    ]


def test_a_tampered_body_or_header_fails(tmp_path: Path) -> None:
    domain = key_domain("tamper")
    signed = mail_dkim_sign(message(domain), domain, "sel", "relaxed", tmp_path)
    (body,), _ = verify(tmp_path, signed.replace(b"minutes are", b"minutes were"))
    assert (body.result, body.reason) == ("fail", "body hash did not verify")
    (head,), _ = verify(tmp_path, signed.replace(b"Subject: Minutes", b"Subject: Invoice"))
    assert (head.result, head.reason) == ("fail", "signature did not verify")


def test_opendkim_rsa_sha1_is_never_valid(tmp_path: Path) -> None:
    domain = key_domain("sha1")
    signed = opendkim_sign(message(domain), domain, "sel", tmp_path)
    assert b"a=rsa-sha1" in signed
    (result,), notes = verify(tmp_path, signed)
    assert result.result == "permerror" and "RFC 8301" in result.reason
    assert ("header.a", "rsa-sha1") in result.properties
    assert notes[0]["result"] == "permerror"


def test_unsigned_mail_is_none(tmp_path: Path) -> None:
    assert verify(tmp_path, message("example.org")) == ([AuthResult("dkim", "none")], [])


def test_missing_revoked_and_mismatched_keys_are_permerror(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    signed = sign(message("nokey.dkim.test"), "nokey.dkim.test", "sel")
    (result,), _ = verify(tmp_path, signed)
    assert (result.result, result.reason) == (
        "permerror",
        "no key at sel._domainkey.nokey.dkim.test",
    )
    publish(zone, "revoked.dkim.test", "sel", "v=DKIM1; k=rsa; p=")
    (result,), _ = verify(tmp_path, sign(message("x"), "revoked.dkim.test", "sel"))
    assert result.result == "permerror" and "revoked" in result.reason
    domain = key_domain("mismatch", "ed25519")
    (result,), _ = verify(tmp_path, sign(message(domain), domain, "sel"))
    assert (result.result, result.reason) == ("permerror", "ed25519 key for rsa-sha256")
    publish(zone, "garbage.dkim.test", "sel", "v=DKIM1; p=not base64 at all!")
    (result,), _ = verify(tmp_path, sign(message("x"), "garbage.dkim.test", "sel"))
    assert result.result == "permerror" and result.reason.startswith("bad key record")


def test_rsa_keys_under_1024_bits_fail(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    pem, record = rsa_key(768)
    publish(zone, "small.dkim.test", "sel", record)
    signed = sign(message("small.dkim.test"), "small.dkim.test", "sel", key=pem)
    (result,), _ = verify(tmp_path, signed)
    assert (result.result, result.reason) == ("fail", "RSA key of 768 bits (RFC 8301 3.2)")


def test_body_length_leaving_content_unsigned_is_policy(tmp_path: Path) -> None:
    domain = key_domain("length")
    signed = sign(message(domain), domain, "sel", length=True)
    (whole,), _ = verify(tmp_path, signed)
    assert whole.result == "pass"
    (appended,), notes = verify(tmp_path, signed + b"Click here: http://evil.test/\r\n")
    assert (appended.result, appended.reason) == ("policy", "l= leaves 31 bytes unsigned")
    assert notes[0]["result"] == "policy"


BAD_SIGNATURES = [
    b"garbage",
    b"v=1; a=rsa-sha256; d=x.test; s=sel",  # no b=, bh=, h=
    b"v=1; a=rsa-sha256; d=x.test; s=sel; h=from; bh=AAAA; b=AAAA; l=-5",
    b"v=1; a=rsa-sha512; d=x.test; s=sel; h=from; bh=AAAA; b=AAAA",
    b"v=1; a=rsa-sha256; d=x.test; s=sel; h=to; bh=AAAA; b=AAAA",  # From not signed
    b"v=1; a=rsa-sha256; d=x.test; s=sel; h=from; bh=AAAA; b=AAAA; c=odd/way",
    b"v=1; a=rsa-sha256; d=x.test; s=sel; h=from; bh=AAAA; b=AAAA; x=1",  # expired
    b"v=1; a=rsa-sha256; d=x.test; s=sel; h=from; bh=AAAA; b=AAAA; i=@other.test",
    b"v=1; a=rsa-sha256; d=x..test; s=sel; h=from; bh=AAAA; b=AAAA",
    b"v=1; a=rsa-sha256; d=x.test; s=" + b"a" * 300 + b"; h=from; bh=AAAA; b=AAAA",
    b"v=2; a=rsa-sha256; d=x.test; s=sel; h=from; bh=AAAA; b=AAAA",
    b"v=1; v=1; a=rsa-sha256; d=x.test; s=sel; h=from; bh=AAAA; b=AAAA",
]


@pytest.mark.parametrize("value", BAD_SIGNATURES)
def test_malformed_signatures_are_permerror(tmp_path: Path, value: bytes) -> None:
    (result,), _ = verify(tmp_path, b"DKIM-Signature: " + value + b"\r\n" + message("x.test"))
    assert result.result == "permerror" and result.reason


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_fuzzed_signatures_get_a_result(tmp_path: Path, value: bytes) -> None:
    value = value.replace(b"\r", b"").replace(b"\n", b"\r\n ")
    results, _ = verify(tmp_path, b"DKIM-Signature: " + value + b"\r\n" + message("x.test"))
    assert {r.result for r in results} <= {"permerror", "fail", "temperror", "none"}


def test_signatures_beyond_the_limit_are_permerror(tmp_path: Path) -> None:
    domain = key_domain("many")
    signed = message(domain)
    for _ in range(3):
        signed = sign(signed, domain, "sel")
    results, _ = verify(tmp_path, signed, max_signatures=2)
    assert [r.result for r in results] == ["pass", "pass", "permerror"]
    assert results[2].reason == "more than 2 signatures: not verified"


def test_a_silent_dns_server_is_temperror_within_the_timeout(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        signed = sign(message("slow.dkim.test"), "slow.dkim.test", "sel")
        start = time.monotonic()
        check = make_check(tmp_path, silent.getsockname()[1], dns_timeout=1)
        context = MailContext("192.0.2.1", content=signed)
        verdict = blockingCallFromThread(reactor, check.check, "data", context)
    assert time.monotonic() - start < 3
    (result,) = verdict.results
    assert (result.result, result.reason) == (
        "temperror",
        "DNS time-out for sel._domainkey.slow.dkim.test",
    )


@pytest.mark.parametrize(
    "options",
    [{"bogus": 1}, {"max_signatures": 0}, {"min_rsa_bits": 512}, {"dns_timeout": "soon"}],
)
def test_bad_options_are_refused(tmp_path: Path, options: Mapping[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_check(tmp_path, **options)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    filters = FilterSettings(chain=("dkim",))
    dns = DNSSettings(servers=(f"127.0.0.1:{dns_zone()[1]}",))
    with running_server(tmp_path, filters=filters, dns=dns) as srv:
        yield srv


def test_results_reach_the_stored_message(server: Any, tmp_path: Path) -> None:
    domain = key_domain("smtp")
    signed = mail_dkim_sign(message(domain), domain, "sel", "relaxed", tmp_path)
    with smtplib.SMTP("127.0.0.1", server.port("smtp")) as s:
        s.sendmail(f"bob@{domain}", [server.user], signed)
    inbox = server.server.store.shards.user_dir(server.user) / "new"
    (stored,) = [p.read_bytes() for p in inbox.iterdir()]
    assert stored.startswith(b"Received: from ")  # this hop's trace first, then its results
    assert (
        b"\r\nAuthentication-Results: mail.example.test;\r\n"
        b"\tdkim=pass header.d=smtp.dkim.test header.s=sel header.a=rsa-sha256\r\n"
    ) in stored


class Truncating(DatagramProtocol):
    """A DNS server that answers every query over UDP with an empty, truncated reply (TC=1)
    and has no TCP: a large answer that cannot be had whole."""

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        query = dns.Message()
        query.fromStr(data)
        reply = dns.Message(id=query.id, answer=1, trunc=1)
        reply.queries = query.queries
        self.transport.write(reply.toStr(), addr)


def test_a_large_key_is_fetched_and_a_truncated_one_is_temperror(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    pem, record = rsa_key(4096)
    publish(zone, "big.dkim.test", "sel", record)
    signed = sign(message("big.dkim.test"), "big.dkim.test", "sel", key=pem)
    (result,), _ = verify(tmp_path, signed)
    assert result.result == "pass"
    port = blockingCallFromThread(reactor, reactor.listenUDP, 0, Truncating(), "127.0.0.1")
    try:
        check = make_check(tmp_path, port.getHost().port, dns_timeout=2)
        context = MailContext("192.0.2.1", content=signed)
        (result,) = blockingCallFromThread(reactor, check.check, "data", context).results
    finally:
        blockingCallFromThread(reactor, port.stopListening)
    assert result.result == "temperror" and result.reason.startswith("DNS ")
