"""``ourmail dns check`` (ourmail/dns/check.py, lookup.py) against a real DNS server on
loopback (``twisted.names``, tests/peers/dns.py) over UDP and TCP: the right records pass,
each kind of wrong record gets its FAIL or WARN and reason, and a server that never answers
fails every record as a time-out.  The command itself runs as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import _ensure_reactor, served_zone
from peers import dns as testdns
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.threads import blockingCallFromThread
from twisted.names import dns

from ourmail.dns.api import DomainRecords, check_domain, records_of
from ourmail.dns.check import CheckResult
from ourmail.dns.lookup import Lookup, make_resolver
from ourmail.dns.records import DkimPublic, MailSetup, Record
from ourmail.secure.dkimkeys import KeyStore

DOMAIN, HOST = "example.org", "mail.example.org"
PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "imaps": 993, "pop3s": 995,
         "web": 443}  # fmt: skip


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    store = KeyStore(tmp_path_factory.mktemp("dkim"))
    store.generate(DOMAIN, "202612r", "rsa")
    store.generate(DOMAIN, "202612e", "ed25519")
    store.generate("stale.example", "202612r", "rsa")  # another key, for a stale record
    return store


@pytest.fixture
def found(keys: KeyStore) -> DomainRecords:
    dkim = tuple(DkimPublic(k.selector, k.algorithm, k.public_value()) for k in keys.keys(DOMAIN))
    here = frozenset({"192.0.2.10"})  # as if this machine had that address
    return records_of(MailSetup(DOMAIN, HOST, PORTS, dkim, "testing", ("192.0.2.10",), here))


@pytest.fixture
def served() -> Iterator[tuple[testdns.TestZone, int]]:
    """A zone served over UDP and TCP; UDP answers over 400 bytes are truncated (an RSA key
    record is about 470), so the check asks again over TCP (RFC 1035 §4.2)."""
    zone = testdns.TestZone()
    with served_zone(zone, 400) as number:
        yield zone, number


def publish(zone: testdns.TestZone, records: tuple[Record, ...]) -> None:
    """``records`` into ``zone``, as an admin would paste them."""
    grouped: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        grouped.setdefault((r.name, r.type), []).append(r)
    for (name, kind), group in grouped.items():
        if kind == "MX":
            zone.set_mx(name, [(r.priority, r.target) for r in group])
        elif kind in ("A", "AAAA"):
            zone.set_address(name, *(r.address for r in group))
        elif kind == "TXT":
            zone.set_txt(name, *(r.strings() for r in group))
        elif kind == "SRV":
            zone.set_records(name, dns.SRV, *(srv(r.priority, r.weight, r.port, r.target)
                                              for r in group))  # fmt: skip
        elif kind == "PTR":
            zone.set_records(name, dns.PTR, dns.Record_PTR(group[0].target.encode()))
        else:
            zone.set_records(name, dns.CNAME, dns.Record_CNAME(group[0].target.encode()))


def srv(priority: int, weight: int, port: int, target: str) -> dns.Record_SRV:
    return dns.Record_SRV(priority, weight, port, b"" if target == "." else target.encode())


def check(port: int, found: DomainRecords, timeout: float = 2) -> list[CheckResult]:
    lookup = Lookup(make_resolver([f"127.0.0.1:{port}"]), (timeout,))
    return blockingCallFromThread(reactor, check_domain, lookup, found)


def result(results: list[CheckResult], name: str, kind: str | None = None) -> CheckResult:
    (one,) = [
        r for r in results if r.record.name == name and (kind is None or r.record.type == kind)
    ]
    return one


def test_the_right_records_all_pass(
    served: tuple[testdns.TestZone, int], found: DomainRecords
) -> None:
    zone, port = served
    publish(zone, found.records)
    results = check(port, found)
    assert [r.line() for r in results if r.status != "pass"] == []
    # One result per record, the host's address once; the long RSA key came over TCP.
    assert len(results) == len(found.records)
    dkim = result(results, f"202612r._domainkey.{DOMAIN}")
    assert dkim.reason == "the DKIM key matches this server's" and len(dkim.found[0]) > 400
    assert result(results, DOMAIN, "MX").reason == f"MX points at {HOST}"
    assert result(results, f"_pop3._tcp.{DOMAIN}").reason == "says pop3 is not offered"
    assert "p=none" in result(results, f"_dmarc.{DOMAIN}").reason


@pytest.mark.parametrize(
    ("breakage", "name", "status", "reason"),
    [
        ("no dkim", f"202612r._domainkey.{DOMAIN}", "fail",
         f"missing: 202612r._domainkey.{DOMAIN} does not exist (NXDOMAIN)"),
        ("stale dkim", f"202612r._domainkey.{DOMAIN}", "fail", "the published key is not this server's"),
        ("revoked dkim", f"202612e._domainkey.{DOMAIN}", "fail", "the key is revoked"),
        ("dkim not a key", f"202612r._domainkey.{DOMAIN}", "fail", "not a DKIM key record (no p= tag"),
        ("two dkim", f"202612e._domainkey.{DOMAIN}", "fail", "2 TXT records: verifiers may take any one"),
        ("two spf", DOMAIN + " TXT", "fail", "2 SPF records: receivers treat that as an error"),
        ("no spf", DOMAIN + " TXT", "fail", f"no SPF record (a TXT starting v=spf1) at {DOMAIN}"),
        ("spf +all", DOMAIN + " TXT", "fail", "SPF has +all"),
        ("spf +all then a modifier", DOMAIN + " TXT", "fail", "SPF has +all: it lets anyone send"),
        ("other spf", DOMAIN + " TXT", "warn", f"SPF differs from 'v=spf1 mx -all': make sure it lets {HOST} send"),
        ("mx elsewhere", DOMAIN + " MX", "fail", f"MX points at mx.elsewhere.net, not at {HOST}"),
        ("mx also elsewhere", DOMAIN + " MX", "warn", "MX also names backup.example.net"),
        ("mx prefers another", DOMAIN + " MX", "fail", f"MX prefers mx.oldprovider.net to {HOST}"),
        ("no mx", DOMAIN + " MX", "fail", "no MX record: senders fall back"),
        ("null mx", DOMAIN + " MX", "fail", "a null MX"),
        ("dmarc without rua", f"_dmarc.{DOMAIN}", "warn", "p=quarantine but no rua=mailto: address"),
        ("two dmarc", f"_dmarc.{DOMAIN}", "fail", "2 DMARC records: receivers apply none of them"),
        ("srv wrong port", f"_imaps._tcp.{DOMAIN}", "fail", "port 994, but imaps listens on 993"),
        ("srv elsewhere", f"_submissions._tcp.{DOMAIN}", "fail", f"points at smtp.provider.net, not {HOST}"),
        ("srv for a service that is off", f"_pop3._tcp.{DOMAIN}", "warn", "points clients at pop3, which is off here"),
        ("no srv", f"_imaps._tcp.{DOMAIN}", "warn", f"missing: _imaps._tcp.{DOMAIN} does not exist"),
        ("host has no address", HOST, "fail", f"{HOST} has no A or AAAA record"),
        ("host is an alias", HOST, "warn", f"{HOST} is an alias of web.example.org: an MX or SRV target must not be an alias"),
        ("old mta-sts id", f"_mta-sts.{DOMAIN}", "warn", "id=20240101, not this policy's id="),
        ("two mta-sts", f"_mta-sts.{DOMAIN}", "fail", "2 v=STSv1 records"),
        ("tls-rpt without rua", f"_smtp._tls.{DOMAIN}", "fail", "no rua="),
        ("no tls-rpt", f"_smtp._tls.{DOMAIN}", "warn", f"missing: no TXT record at _smtp._tls.{DOMAIN}"),
        ("ptr elsewhere", "10.2.0.192.in-addr.arpa", "warn", f"192.0.2.10 names dsl-10.isp.example, not {HOST}: some receivers refuse its mail"),
        ("no ptr", "10.2.0.192.in-addr.arpa", "warn", "missing: 10.2.0.192.in-addr.arpa does not exist (NXDOMAIN)"),
        ("autoconfig elsewhere", f"autoconfig.{DOMAIN}", "warn", f"an alias of hosting.example.net, not of {HOST}"),
        ("autoconfig as address", f"autoconfig.{DOMAIN}", "pass", f"has the addresses of {HOST}"),
        ("autoconfig through a chain", f"autoconfig.{DOMAIN}", "pass",
         f"an alias of {HOST} (through cdn.example.net)"),
        ("autoconfig with another aaaa", f"autoconfig.{DOMAIN}", "warn", f"not an alias of {HOST}"),
        ("dmarc version in lower case", f"_dmarc.{DOMAIN}", "fail",
         f"no DMARC record (a TXT starting v=DMARC1) at _dmarc.{DOMAIN} ('v=dmarc1' is not 'v=DMARC1': case matters)"),
        ("dmarc tag names in upper case", f"_dmarc.{DOMAIN}", "pass", "DMARC p=none, reports to mailto:"),
        ("mta-sts version in lower case", f"_mta-sts.{DOMAIN}", "warn",
         f"missing: no TXT record at _mta-sts.{DOMAIN} TXT ('v=stsv1' is not 'v=STSv1': case matters)"),
        ("mta-sts id in upper case", f"_mta-sts.{DOMAIN}", "fail", "no valid id="),
        ("tls-rpt version in other case", f"_smtp._tls.{DOMAIN}", "warn",
         f"missing: no TXT record at _smtp._tls.{DOMAIN} TXT ('v=TLSRPTV1' is not 'v=TLSRPTv1': case matters)"),
        ("dkim key tag in upper case", f"202612e._domainkey.{DOMAIN}", "fail", "not a DKIM key record (no p= tag"),
    ],
)  # fmt: skip
def test_each_wrong_record_gets_its_verdict(
    served: tuple[testdns.TestZone, int],
    found: DomainRecords,
    keys: KeyStore,
    breakage: str,
    name: str,
    status: str,
    reason: str,
) -> None:
    zone, port = served
    publish(zone, found.records)
    BREAK[breakage](zone, keys)
    results = check(port, found)
    owner, _, kind = name.partition(" ")
    got = result(results, owner, kind or None)
    assert (got.status, got.reason[: len(reason)]) == (status, reason), got.line()
    # Nothing else is touched by the breakage.
    others = [r.line() for r in results if r is not got and r.status != "pass"]
    assert others == []


def _stale(zone: testdns.TestZone, keys: KeyStore) -> None:
    (other,) = keys.keys("stale.example")
    zone.set_txt(f"202612r._domainkey.{DOMAIN}", other.txt_strings())


def _srv(name: str, *rdata: tuple[int, int, int, str]) -> object:
    return lambda zone, keys: zone.set_records(
        f"{name}.{DOMAIN}", dns.SRV, *(srv(*r) for r in rdata)
    )


BREAK = {
    "no dkim": lambda zone, keys: zone.clear(f"202612r._domainkey.{DOMAIN}"),
    "stale dkim": _stale,
    "revoked dkim": lambda zone, keys: zone.set_txt(f"202612e._domainkey.{DOMAIN}", "v=DKIM1; k=ed25519; p="),
    "dkim not a key": lambda zone, keys: zone.set_txt(f"202612r._domainkey.{DOMAIN}", "hello"),
    "two dkim": lambda zone, keys: zone.set_txt(
        f"202612e._domainkey.{DOMAIN}", *([r.txt_strings() for r in keys.keys(DOMAIN) if r.selector == "202612e"] * 2)
    ),
    "two spf": lambda zone, keys: zone.set_txt(DOMAIN, "v=spf1 mx -all", "v=spf1 a -all"),
    "no spf": lambda zone, keys: zone.set_txt(DOMAIN, "google-site-verification=abc"),
    "spf +all": lambda zone, keys: zone.set_txt(DOMAIN, "v=spf1 mx +all"),
    "spf +all then a modifier": lambda zone, keys: zone.set_txt(DOMAIN, "v=spf1 +all exp=explain.example.org"),
    "other spf": lambda zone, keys: zone.set_txt(DOMAIN, "v=spf1 ip4:192.0.2.0/24 ~all"),
    "mx elsewhere": lambda zone, keys: zone.set_mx(DOMAIN, [(10, "mx.elsewhere.net")]),
    "mx also elsewhere": lambda zone, keys: zone.set_mx(DOMAIN, [(10, HOST), (20, "backup.example.net")]),
    "mx prefers another": lambda zone, keys: zone.set_mx(DOMAIN, [(20, HOST), (10, "mx.oldprovider.net")]),
    "no mx": lambda zone, keys: zone.set_mx(DOMAIN, []),
    "null mx": lambda zone, keys: zone.set_mx(DOMAIN, [(0, ".")]),
    "dmarc without rua": lambda zone, keys: zone.set_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=quarantine"),
    "two dmarc": lambda zone, keys: zone.set_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=none", "v=DMARC1; p=reject"),
    "srv wrong port": _srv("_imaps._tcp", (0, 1, 994, HOST)),
    "srv elsewhere": _srv("_submissions._tcp", (0, 1, 465, "smtp.provider.net")),
    "srv for a service that is off": _srv("_pop3._tcp", (10, 1, 110, HOST)),
    "no srv": lambda zone, keys: zone.clear(f"_imaps._tcp.{DOMAIN}"),
    "host has no address": lambda zone, keys: zone.set_address(HOST),
    "host is an alias": lambda zone, keys: (
        zone.clear(HOST),
        zone.set_records(HOST, dns.CNAME, dns.Record_CNAME(b"web.example.org")),
        zone.set_address("web.example.org", "192.0.2.10"),
    ),
    "old mta-sts id": lambda zone, keys: zone.set_txt(f"_mta-sts.{DOMAIN}", "v=STSv1; id=20240101"),
    "two mta-sts": lambda zone, keys: zone.set_txt(f"_mta-sts.{DOMAIN}", "v=STSv1; id=1", "v=STSv1; id=2"),
    "tls-rpt without rua": lambda zone, keys: zone.set_txt(f"_smtp._tls.{DOMAIN}", "v=TLSRPTv1;"),
    "no tls-rpt": lambda zone, keys: zone.set_txt(f"_smtp._tls.{DOMAIN}", "unrelated"),
    "ptr elsewhere": lambda zone, keys: zone.set_records(
        "10.2.0.192.in-addr.arpa", dns.PTR, dns.Record_PTR(b"dsl-10.isp.example")
    ),
    "no ptr": lambda zone, keys: zone.clear("10.2.0.192.in-addr.arpa"),
    "autoconfig elsewhere": lambda zone, keys: zone.set_records(
        f"autoconfig.{DOMAIN}", dns.CNAME, dns.Record_CNAME(b"hosting.example.net")
    ),
    "autoconfig through a chain": lambda zone, keys: (
        zone.set_records(f"autoconfig.{DOMAIN}", dns.CNAME, dns.Record_CNAME(b"cdn.example.net")),
        zone.set_records("cdn.example.net", dns.CNAME, dns.Record_CNAME(HOST.encode())),
    ),
    "autoconfig with another aaaa": lambda zone, keys: (
        zone.clear(f"autoconfig.{DOMAIN}"),
        zone.set_address(f"autoconfig.{DOMAIN}", "192.0.2.10", "2001:db8::99"),
    ),
    "autoconfig as address": lambda zone, keys: (
        zone.clear(f"autoconfig.{DOMAIN}"), zone.set_address(f"autoconfig.{DOMAIN}", "192.0.2.10")
    ),
    "dmarc version in lower case": lambda zone, keys: zone.set_txt(
        f"_dmarc.{DOMAIN}", f"v=dmarc1; p=none; rua=mailto:postmaster@{DOMAIN}"
    ),
    "dmarc tag names in upper case": lambda zone, keys: zone.set_txt(
        f"_dmarc.{DOMAIN}", f"V = DMARC1; P=none; RUA=mailto:postmaster@{DOMAIN}"
    ),
    "mta-sts version in lower case": lambda zone, keys: zone.set_txt(
        f"_mta-sts.{DOMAIN}", f"v=stsv1; id={MailSetup(DOMAIN, HOST, PORTS).mta_sts_id}"
    ),
    "mta-sts id in upper case": lambda zone, keys: zone.set_txt(
        f"_mta-sts.{DOMAIN}", f"v=STSv1; ID={MailSetup(DOMAIN, HOST, PORTS).mta_sts_id}"
    ),
    "tls-rpt version in other case": lambda zone, keys: zone.set_txt(
        f"_smtp._tls.{DOMAIN}", f"v=TLSRPTV1; rua=mailto:postmaster@{DOMAIN}"
    ),
    "dkim key tag in upper case": lambda zone, keys: zone.set_txt(
        f"202612e._domainkey.{DOMAIN}",
        next(k.txt() for k in keys.keys(DOMAIN) if k.selector == "202612e").replace("p=", "P="),
    ),
}  # fmt: skip


def test_a_host_address_that_is_not_this_machines_is_a_warning_not_a_pass(
    served: tuple[testdns.TestZone, int], found: DomainRecords
) -> None:
    zone, port = served
    publish(zone, found.records)
    elsewhere = attrs.evolve(found.setup, own_addresses=frozenset({"198.51.100.7", "::1"}))
    results = check(port, records_of(elsewhere))
    got = result(results, HOST)
    assert (got.status, got.found) == ("warn", ("192.0.2.10",))
    assert got.reason == (
        f"{HOST} has 192.0.2.10, no address of this machine: cannot confirm this address is "
        "this server (fine behind NAT or a port forward)"
    )
    assert result(check(port, found), HOST).status == "pass"


@pytest.mark.parametrize("published", ["suggested", "plain"])
def test_with_a_smart_host_spf_is_a_warning_naming_it(
    served: tuple[testdns.TestZone, int], found: DomainRecords, published: str
) -> None:
    zone, port = served
    relayed = records_of(attrs.evolve(found.setup, relay="smtp.provider.net"))
    publish(zone, relayed.records)
    if published == "plain":  # the record of a server without a relay: the check must not pass
        zone.set_txt(DOMAIN, "v=spf1 mx -all")
    got = result(check(port, relayed), DOMAIN, "TXT")
    assert got.status == "warn"
    assert got.reason == (
        "mail leaves through the smart host smtp.provider.net ([queue] relay): make sure SPF "
        "lets its addresses send (the include: its provider documents)"
    )


def test_a_dkim_key_published_through_a_cname_is_followed(
    served: tuple[testdns.TestZone, int], found: DomainRecords
) -> None:
    zone, port = served
    publish(zone, found.records)
    name = f"202612e._domainkey.{DOMAIN}"
    key = next(r for r in found.records if r.name == name)
    zone.clear(name)
    zone.set_records(name, dns.CNAME, dns.Record_CNAME(b"keys.provider.net"))
    zone.set_txt("keys.provider.net", key.strings())
    assert result(check(port, found), name).status == "pass"
    zone.set_txt("keys.provider.net", "v=DKIM1; k=ed25519; p=AAAA")
    assert result(check(port, found), name).status == "fail"


def test_an_ipv6_only_sub_domain_under_its_organizations_dmarc(
    served: tuple[testdns.TestZone, int],
) -> None:
    zone, port = served
    sub = f"lists.{DOMAIN}"
    here = frozenset({"2001:db8::10"})
    found = records_of(MailSetup(sub, HOST, PORTS, (), "testing", ("2001:db8::10",), here))
    publish(zone, found.records)
    zone.clear(f"_dmarc.{sub}")
    zone.set_txt(f"_dmarc.{DOMAIN}", f"v=DMARC1; p=none; sp=reject; rua=mailto:d@{DOMAIN}")
    zone.clear(f"autoconfig.{sub}")
    zone.set_address(f"autoconfig.{sub}", "2001:db8::10")
    results = check(port, found)
    dmarc = result(results, f"_dmarc.{sub}")
    assert dmarc.status == "warn" and dmarc.reason.startswith(
        f"no DMARC record at _dmarc.{sub}: receivers apply {DOMAIN}'s (p=reject"
    )
    assert result(results, f"autoconfig.{sub}").status == "pass"
    zone.clear(f"_dmarc.{DOMAIN}")
    assert result(check(port, found), f"_dmarc.{sub}").status == "fail"


def test_a_truncated_answer_is_asked_again_over_tcp(found: DomainRecords) -> None:
    """The RSA key's answer does not fit the (truncating) UDP server's 400 bytes: with no TCP
    server beside it, that one record cannot be read, and the check says so."""
    _ensure_reactor()
    zone = testdns.TestZone()
    publish(zone, found.records)
    udp, port = blockingCallFromThread(reactor, testdns.start, zone, 400)
    try:
        results = check(port, found)
    finally:
        blockingCallFromThread(reactor, udp.stopListening)
    rsa = result(results, f"202612r._domainkey.{DOMAIN}")
    assert (rsa.status, rsa.reason) == (
        "fail",
        f"the DNS server gave an error for 202612r._domainkey.{DOMAIN} TXT",
    )
    assert [r.line() for r in results if r.status != "pass"] == [rsa.line()]


def test_nothing_at_all(served: tuple[testdns.TestZone, int], found: DomainRecords) -> None:
    _, port = served
    results = check(port, found)
    assert {r.status for r in results if r.record.required} == {"fail"}
    assert {r.status for r in results if not r.record.required} == {"warn"}
    assert result(results, DOMAIN, "MX").reason == f"missing: {DOMAIN} does not exist (NXDOMAIN)"


def test_a_server_that_never_answers_fails_everything_as_a_timeout(found: DomainRecords) -> None:
    _ensure_reactor()
    silent = blockingCallFromThread(reactor, reactor.listenUDP, 0, DatagramProtocol(), "127.0.0.1")
    try:
        results = check(silent.getHost().port, found, timeout=0.5)
    finally:
        blockingCallFromThread(reactor, silent.stopListening)
    assert {r.status for r in results} == {"fail"}
    assert all("the DNS server did not reply in time" in r.reason for r in results), [
        r.line() for r in results if "in time" not in r.reason
    ]


def _ourmail(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ourmail", "--data", str(data), *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Path:
    listen = "".join(f'{name} = "tcp:{port}"\n' for name, port in PORTS.items())
    off = "".join(f'{name} = "none"\n' for name in ("imap", "pop3"))
    (tmp_path / "ourmail.toml").write_text(
        f'hostname = "{HOST}"\ndomains = ["{DOMAIN}"]\n[listen]\n{listen}{off}'
    )
    KeyStore(tmp_path / "dkim").generate(DOMAIN, "202612e", "ed25519")
    return tmp_path


def test_the_commands_print_the_records_and_check_them(
    served: tuple[testdns.TestZone, int], data: Path
) -> None:
    zone, port = served
    zone.set_address(HOST, "127.0.0.1")  # an address of this machine's, as it should be
    out = _ourmail(data, "dns", "records", DOMAIN, "--server", f"127.0.0.1:{port}")
    assert out.returncode == 0, out.stderr
    assert "mail\tIN\tA\t127.0.0.1" in out.stdout and "$ORIGIN example.org." in out.stdout
    (key,) = KeyStore(data / "dkim").keys(DOMAIN)
    assert f'202612e._domainkey\tIN\tTXT\t"{key.txt()}"' in out.stdout

    # Published as printed: every record passes, exit status 0.
    setup = MailSetup(DOMAIN, HOST, {k: v for k, v in PORTS.items()},
                      (DkimPublic("202612e", "ed25519", key.public_value()),), "testing",
                      ("127.0.0.1",))  # fmt: skip
    publish(zone, records_of(setup).records)
    out = _ourmail(data, "dns", "check", DOMAIN, "--server", f"127.0.0.1:{port}")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == f"{len(lines) - 1} pass, 0 warn, 0 fail"
    assert f"PASS  MX     {DOMAIN}: MX points at {HOST}" in lines

    # An MX to another host: one FAIL line, exit status 1 and the count on stderr.
    zone.set_mx(DOMAIN, [(10, "mx.elsewhere.net")])
    zone.set_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=none")
    out = _ourmail(data, "dns", "check", DOMAIN, "--server", f"127.0.0.1:{port}")
    assert out.returncode == 1
    assert f"FAIL  MX     {DOMAIN}: MX points at mx.elsewhere.net, not at {HOST}" in out.stdout
    assert f"WARN  TXT    _dmarc.{DOMAIN}: p=none but no rua=mailto:" in out.stdout
    note, failed = out.stderr.strip().splitlines()
    assert note.startswith("ourmail: note: ports imaps 993, pop3s 995, smtp 25, submission 587")
    assert failed == f"ourmail: 1 record of {DOMAIN} failed"


def test_the_command_refuses_bad_arguments(data: Path) -> None:
    out = _ourmail(data, "dns", "check", DOMAIN, "--server", "nonsense")
    assert (out.returncode, out.stderr.strip()) == (
        1,
        "ourmail: --server: 'nonsense' is not HOST:PORT",
    )
    out = _ourmail(data, "dns", "check", DOMAIN, "--timeout", "0")
    assert (out.returncode, out.stderr.strip()) == (
        1,
        "ourmail: --timeout: seconds, more than 0 and at most 60",
    )
    out = _ourmail(data, "dns", "records", "not a domain!")
    assert out.returncode == 1 and "not a domain name" in out.stderr
    (data / "dkim" / DOMAIN / "broken.key").write_text("not a key")
    out = _ourmail(data, "dns", "records", DOMAIN)
    assert (
        out.returncode == 1
        and out.stderr.startswith("ourmail: ")
        and "not a PEM private key" in out.stderr
    )
    assert "Traceback" not in out.stderr
