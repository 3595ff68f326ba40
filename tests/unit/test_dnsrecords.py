"""The records ``ourmail dns records`` computes (ourmail/dns/records.py, zone.py): the right
values, and a zone snippet that a real zone-file parser (dnspython's) reads back."""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import dns.rdatatype
import dns.zone

from ourmail.config import load_settings
from ourmail.dns.api import domain_records, records_of
from ourmail.dns.fromsettings import configured_ports
from ourmail.dns.records import MTA_STS_MAX_AGE, DkimPublic, MailSetup, policy_id
from ourmail.secure.dkimkeys import KeyStore
from ourmail.web.clientconfig import ClientSetup, mta_sts_policy

PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "imaps": 993, "web": 443}


def setup(**changes: object) -> MailSetup:
    rsa = DkimPublic("202612r", "rsa", "MIIB" + "A" * 388)
    ed = DkimPublic("202612e", "ed25519", "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    base = MailSetup("example.org", "mail.example.org", PORTS, (rsa, ed), "testing",
                     ("192.0.2.10", "2001:db8::10"))  # fmt: skip
    return attrs.evolve(base, **changes)


def parsed(text: str) -> dns.zone.Zone:
    return dns.zone.from_text(text, origin="example.org.", check_origin=False)


def rdatas(zone: dns.zone.Zone, name: str, kind: str) -> list[str]:
    node = zone.get_node(name)
    assert node is not None, name
    found = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(kind))
    assert found is not None, (name, kind)
    return sorted(r.to_text(origin=zone.origin, relativize=False) for r in found)


def test_the_snippet_is_zone_syntax_with_every_record() -> None:
    found = records_of(setup())
    zone = parsed(found.zone)
    assert found.zone.splitlines()[2] == "$ORIGIN example.org."
    assert rdatas(zone, "@", "MX") == ["10 mail.example.org."]
    assert rdatas(zone, "mail", "A") == ["192.0.2.10"]
    assert rdatas(zone, "mail", "AAAA") == ["2001:db8::10"]
    assert rdatas(zone, "@", "TXT") == ['"v=spf1 mx -all"']
    assert rdatas(zone, "_dmarc", "TXT") == [
        '"v=DMARC1; p=none; rua=mailto:postmaster@example.org"'
    ]
    assert rdatas(zone, "_smtp._tls", "TXT") == ['"v=TLSRPTv1; rua=mailto:postmaster@example.org"']
    sts = rdatas(zone, "_mta-sts", "TXT")[0]
    assert sts.startswith('"v=STSv1; id=') and len(sts) == len('"v=STSv1; id="') + 20
    assert rdatas(zone, "mta-sts", "CNAME") == ["mail.example.org."]
    assert rdatas(zone, "autoconfig", "CNAME") == ["mail.example.org."]
    assert rdatas(zone, "autodiscover", "CNAME") == ["mail.example.org."]
    assert rdatas(zone, "_imaps._tcp", "SRV") == ["0 1 993 mail.example.org."]
    assert rdatas(zone, "_submissions._tcp", "SRV") == ["0 1 465 mail.example.org."]
    assert rdatas(zone, "_submission._tcp", "SRV") == ["10 1 587 mail.example.org."]
    assert rdatas(zone, "_autodiscover._tcp", "SRV") == ["0 1 443 mail.example.org."]
    # RFC 6186 §4: a service that is off is published with target "."
    for off in ("_imap._tcp", "_pop3._tcp", "_pop3s._tcp"):
        assert rdatas(zone, off, "SRV") == ["0 0 0 ."]


def test_dkim_keys_are_split_into_255_byte_strings_that_join_to_the_key() -> None:
    zone = parsed(records_of(setup()).zone)
    node = zone.get_node("202612r._domainkey")
    assert node is not None
    (rdata,) = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.TXT)
    assert len(rdata.strings) == 2 and all(len(s) <= 255 for s in rdata.strings)
    assert b"".join(rdata.strings).decode() == setup().dkim[0].text
    assert rdatas(zone, "202612e._domainkey", "TXT") == [
        '"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="'
    ]


def test_reverse_dns_is_shown_for_each_known_address_but_commented_out() -> None:
    text = records_of(setup()).zone
    assert "; 10.2.0.192.in-addr.arpa.\tIN\tPTR\tmail.example.org." in text
    assert (
        "; 0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.\tIN\tPTR"
        in text
    )
    assert not [n for n in parsed(text).nodes if "arpa" in str(n)]


def test_unknown_address_and_out_of_zone_host_are_commented_out() -> None:
    text = records_of(setup(addresses=())).zone
    assert "; mail\tIN\tA\t192.0.2.1" in text and "public IPv4 address" in text
    assert parsed(text).get_node("mail") is None
    text = records_of(setup(hostname="mx.provider.net")).zone
    zone = parsed(text)
    assert zone.get_node("mx.provider.net.") is None
    assert "; (publish in the zone of mx.provider.net, not here)" in text
    assert rdatas(zone, "@", "MX") == ["10 mx.provider.net."]


def test_without_dkim_keys_or_web_listener() -> None:
    text = records_of(setup(dkim=(), ports={"smtp": 25, "imaps": 993})).zone
    zone = parsed(text)
    assert "make one with `ourmail dkim gen example.org`" in text
    assert not [n for n in zone.nodes if "_domainkey" in str(n)]
    # The web listener serves MTA-STS and autoconfig: without it they are not asked for.
    for name in ("_mta-sts", "mta-sts", "autoconfig", "_autodiscover._tcp"):
        assert zone.get_node(name) is None
    assert rdatas(zone, "_submissions._tcp", "SRV") == ["0 0 0 ."]


def test_the_mta_sts_id_follows_the_policy_the_web_serves() -> None:
    assert attrs.fields(ClientSetup).mta_sts_max_age.default == MTA_STS_MAX_AGE
    for mode in ("testing", "enforce", "none"):
        served = mta_sts_policy(ClientSetup("mail.example.org", {}, mode))
        assert setup(mta_sts_mode=mode).mta_sts_id == hashlib.sha256(served).hexdigest()[:20]
        assert policy_id(served) == setup(mta_sts_mode=mode).mta_sts_id
    assert setup().mta_sts_id != setup(mta_sts_mode="enforce").mta_sts_id


def test_from_settings_reads_ports_and_active_dkim_keys(tmp_path: Path) -> None:
    (tmp_path / "ourmail.toml").write_text(
        'hostname = "mail.example.org"\ndomains = ["example.org"]\n'
        '[listen]\nimaps = "tcp:993:backlog=1024"\npop3 = "none"\nimap = "ssl:port=1143"\n'
        '[web]\nmta_sts_mode = "enforce"\n'
    )
    settings = load_settings(data=str(tmp_path))
    keys = KeyStore(tmp_path / "dkim")
    signing = keys.generate("example.org", "new", "ed25519")
    keys.generate("example.org", "old", "ed25519")
    keys.retire("example.org", "old")
    found = domain_records(settings, "example.org", ("192.0.2.10",))
    assert found.setup.ports["imaps"] == 993 and found.setup.ports["imap"] == 1143
    assert "pop3" not in found.setup.ports
    assert [k.selector for k in found.setup.dkim] == ["new"]
    assert found.setup.dkim[0].text == signing.txt()
    assert found.setup.mta_sts_mode == "enforce"
    assert configured_ports({"web": "unix:/x.sock", "smtp": "tcp:0", "imap": None}) == {}


def test_with_a_smart_host_spf_names_it_and_soft_fails(tmp_path: Path) -> None:
    (tmp_path / "ourmail.toml").write_text(
        'hostname = "mail.example.org"\ndomains = ["example.org"]\n'
        '[queue.relay]\nhost = "smtp.provider.net:587"\n'
    )
    found = domain_records(load_settings(data=str(tmp_path)), "example.org")
    assert found.setup.relay == "smtp.provider.net"
    assert rdatas(parsed(found.zone), "@", "TXT") == ['"v=spf1 mx a:smtp.provider.net ~all"']
    (spf,) = [r for r in found.records if r.kind == "spf"]
    assert "replace a:smtp.provider.net with the include: its provider documents" in spf.purpose
