"""ARC (RFC 8617): sets we seal verify with Perl's Mail::DKIM::ARC::Verifier and with our own
``arc`` check over two hops; broken chains give ``fail`` or ``none``, never a traceback; the
trusted-forwarder note DMARC reads."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import dns_zone
from peers import dns as testdns
from peers.perldkim import needs_perl, verify
from storehelp import on_reactor

from ourmail.filters.arc import MAX_KEYS, factory
from ourmail.interfaces import FilterEnvironment, MailContext, Verdict
from ourmail.net.dns import make_resolver
from ourmail.secure.arcseal import ARCSealer
from ourmail.secure.dkimkeys import KeyStore
from ourmail.secure.dkimsign import DKIMSigner

ORIGINAL = (
    b"From: Dan <dan@origin.test>\r\n"
    b"To: list@hop1.test\r\n"
    b"Subject: forwarded\r\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <arc@origin.test>\r\n"
    b"\r\n"
    b"Body text.\r\n"
)


@pytest.fixture(scope="module")
def hops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ARCSealer]]:
    """Sealers of mx.hop1.test and mx.hop2.test, their RSA keys published in the zone."""
    zone, _ = dns_zone()
    sealers = {}
    for hop in ("hop1", "hop2"):
        keys = KeyStore(tmp_path_factory.mktemp(hop))
        key = keys.generate(f"{hop}.test", "arc", "rsa")
        zone.set_txt(f"arc._domainkey.{hop}.test", [s.encode() for s in key.txt_strings()])
        sealers[hop] = ARCSealer(DKIMSigner(keys, f"mx.{hop}.test"), f"mx.{hop}.test")
    yield sealers


def arrive(hop: str, message: bytes, results: str) -> bytes:
    """What the hop's filter chain puts on top: its Authentication-Results."""
    return f"Authentication-Results: mx.{hop}.test; {results}\r\n".encode() + message


def two_hops(hops: dict[str, ARCSealer]) -> bytes:
    first = hops["hop1"].sealed(arrive("hop1", ORIGINAL, "spf=pass smtp.mailfrom=origin.test"))
    return hops["hop2"].sealed(arrive("hop2", first, "arc=pass smtp.remote-ip=127.0.0.1"))


def run_check(message: bytes, recipients: list[str], **options: object) -> tuple[Verdict, object]:
    timeout = options.pop("timeout", 10.0)
    servers = options.pop("servers", (f"127.0.0.1:{dns_zone()[1]}",))
    env = FilterEnvironment(
        resolver=make_resolver(servers),  # type: ignore[arg-type]
        reactor=None,
        hostname="mx.final.test",
        domains=("final.test",),
        state_dir=Path("/nonexistent"),
    )
    check = factory.build(options, env)
    check.timeout = timeout
    context = MailContext("192.0.2.7", recipients=recipients, content=message)
    verdict = on_reactor(check.check, "data", context)
    return verdict, context.notes["arc"]


def arc_result(verdict: Verdict) -> tuple[str, str]:
    (result,) = verdict.results
    assert result.method == "arc"
    assert result.properties == (("smtp.remote-ip", "192.0.2.7"),)
    return result.result, result.reason


@needs_perl
def test_one_and_two_sets_verify_with_mail_dkim_and_our_check(hops: dict[str, ARCSealer]) -> None:
    port = dns_zone()[1]
    one = hops["hop1"].sealed(arrive("hop1", ORIGINAL, "spf=pass smtp.mailfrom=origin.test"))
    assert one.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=hop1.test; s=arc;")
    assert b"ARC-Authentication-Results: i=1; mx.hop1.test;\r\n spf=pass" in one
    assert verify(one, port, arc=True)[0] == "pass"
    assert arc_result(run_check(one, ["x@final.test"])[0]) == ("pass", "")
    two = two_hops(hops)
    assert re.match(rb"ARC-Seal: i=2; cv=pass; a=rsa-sha256; d=hop2.test;", two)
    assert verify(two, port, arc=True)[0] == "pass"
    verdict, note = run_check(two, ["x@final.test"])
    assert arc_result(verdict) == ("pass", "")
    assert note == {"result": "pass", "trusted": False}


def test_trusted_forwarders_globally_and_per_recipient_domain(hops: dict[str, ARCSealer]) -> None:
    two = two_hops(hops)
    _, note = run_check(two, ["x@final.test"], trusted_forwarders=["hop2.test"])
    assert note == {"result": "pass", "trusted": True}
    _, note = run_check(two, ["x@final.test"], trusted_forwarders=["hop1.test"])  # not the last
    assert note == {"result": "pass", "trusted": False}
    by_domain = {"final.test": ["test"]}  # a parent domain covers its sub-domains
    _, note = run_check(two, ["x@final.test"], trusted_forwarders_by_domain=by_domain)
    assert note["trusted"] is True  # type: ignore[index]
    # Every recipient domain must trust the sealer.
    _, note = run_check(
        two, ["x@final.test", "y@other.test"], trusted_forwarders_by_domain=by_domain
    )
    assert note["trusted"] is False  # type: ignore[index]
    broken = two.replace(b"Body text.", b"Body text changed.")
    _, note = run_check(broken, ["x@final.test"], trusted_forwarders=["hop2.test"])
    assert note == {"result": "fail", "trusted": False}


def test_bad_options_are_refused() -> None:
    for options in (
        {"trusted": ["x"]},
        {"trusted_forwarders": "hop2.test"},
        {"trusted_forwarders": [1]},
        {"trusted_forwarders_by_domain": ["x"]},
        {"trusted_forwarders_by_domain": {"a.test": "b.test"}},
    ):
        with pytest.raises(ValueError):
            run_check(ORIGINAL, [], **options)


def _garbage(hops: dict[str, ARCSealer]) -> dict[str, tuple[bytes, str]]:
    one = hops["hop1"].sealed(arrive("hop1", ORIGINAL, "spf=pass smtp.mailfrom=origin.test"))
    two = two_hops(hops)
    fields = re.split(rb"\r\n(?![ \t])", one)
    no_ams = b"\r\n".join(f for f in fields if not f.startswith(b"ARC-Message-Signature:"))
    failed = hops["hop2"].sealed(arrive("hop2", one, "arc=fail smtp.remote-ip=127.0.0.1"))
    many = b"".join(
        f"ARC-Seal: i={i}; cv=pass; a=rsa-sha256; d=d{i}.test; s=s{i}; b=AAAA\r\n".encode()
        for i in range(1, MAX_KEYS + 3)
    )
    return {
        "none": (ORIGINAL, "none"),
        "an incomplete set": (no_ams, "fail"),
        "an i= gap": (re.sub(rb"\bi=1;", b"i=3;", one), "fail"),
        "i=2 claimed cv=none": (two.replace(b"i=2; cv=pass", b"i=2; cv=none", 1), "fail"),
        "a set after cv=fail": (failed, "fail"),
        "a changed seal": (
            two.replace(b"d=hop2.test; s=arc; t=", b"d=hop2.test; s=arc; t=1", 1),
            "fail",
        ),
        "malformed tags": (
            b"ARC-Seal: i=1; ;;==; cv\r\nARC-Message-Signature: ===\r\n" + ORIGINAL,
            "fail",
        ),
        "no instance": (b"ARC-Seal: cv=none; d=x.test; s=y; b=AA\r\n" + ORIGINAL, "none"),
        "an unknown key": (re.sub(rb"s=arc;", b"s=gone;", one), "fail"),
        "too many keys": (many + ORIGINAL, "fail"),
        "binary junk": (b"ARC-Seal: \xff\xfe i=1\r\n\x00\r\n\r\n\x00", "fail"),
        "unusable key names": (
            b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=\xff\xfe..test; s=a b; b=AA\r\n"
            b"ARC-Message-Signature: i=1; a=rsa-sha256; d=" + b"x" * 300 + b".test; s=s; b=AA\r\n"
            b"ARC-Authentication-Results: i=1; x.test; none\r\n" + ORIGINAL,
            "fail",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "none",
        "an incomplete set",
        "an i= gap",
        "i=2 claimed cv=none",
        "a set after cv=fail",
        "a changed seal",
        "malformed tags",
        "no instance",
        "an unknown key",
        "too many keys",
        "binary junk",
        "unusable key names",
    ],
)
def test_broken_chains_fail_without_a_traceback(hops: dict[str, ARCSealer], case: str) -> None:
    message, expected = _garbage(hops)[case]
    verdict, note = run_check(
        message, ["x@final.test"], trusted_forwarders=["hop1.test", "hop2.test"]
    )
    assert verdict.action == "accept"  # ARC alone never refuses: DMARC reads the note
    assert arc_result(verdict)[0] == expected
    assert note == {"result": expected, "trusted": False}


def test_a_dns_server_that_never_answers_gives_fail_within_the_time_out(
    hops: dict[str, ARCSealer],
) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        one = hops["hop1"].sealed(arrive("hop1", ORIGINAL, "spf=pass smtp.mailfrom=origin.test"))
        verdict, note = run_check(
            one, ["x@final.test"], timeout=2.0, servers=(f"127.0.0.1:{port}",)
        )
    finally:
        silent.close()
    result, reason = arc_result(verdict)
    assert result == "fail" and reason
    assert note == {"result": "fail", "trusted": False}


def test_nothing_to_seal_leaves_the_message_alone(
    hops: dict[str, ARCSealer], tmp_path: Path
) -> None:
    sealer = hops["hop1"]
    assert sealer.sealed(ORIGINAL) == ORIGINAL  # no Authentication-Results of ours
    other = arrive("elsewhere", ORIGINAL, "spf=pass smtp.mailfrom=origin.test")
    assert sealer.sealed(other) == other  # someone else's results are not ours to vouch for
    no_key = ARCSealer(DKIMSigner(KeyStore(tmp_path), "mx.hop1.test"), "mx.hop1.test")
    ours = arrive("hop1", ORIGINAL, "spf=pass")
    assert no_key.sealed(ours) == ours
    path = tmp_path / "msg"
    path.write_bytes(ours)
    assert sealer.sealed(path).startswith(b"ARC-Seal: i=1; cv=none;")  # a spooled file too


def test_a_key_record_bigger_than_a_udp_answer_verifies(tmp_path: Path) -> None:
    """A key record of over 1,000 bytes (RFC 1035 §4.2.1 limits plain UDP answers to 512)
    from a server answering over UDP and TCP on one port."""
    zone = testdns.TestZone()
    keys = KeyStore(tmp_path)
    key = keys.generate("big.test", "arc", "rsa")
    padded = "v=DKIM1; k=rsa; n=" + "padding-" * 100 + "; p=" + key.public_value()
    strings = [padded[i : i + 255].encode() for i in range(0, len(padded), 255)]
    zone.set_txt("arc._domainkey.big.test", strings)
    ports, port = on_reactor(testdns.start_udp_tcp, zone)
    try:
        sealer = ARCSealer(DKIMSigner(keys, "mx.big.test"), "mx.big.test")
        sealed = sealer.sealed(arrive("big", ORIGINAL, "spf=pass smtp.mailfrom=origin.test"))
        servers = (f"127.0.0.1:{port}",)
        verdict, _ = run_check(sealed, ["x@final.test"], timeout=4.0, servers=servers)
    finally:
        for listening in ports:
            on_reactor(listening.stopListening)
    assert arc_result(verdict) == ("pass", "")
