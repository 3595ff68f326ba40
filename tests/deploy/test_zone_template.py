"""contrib/dns/zone.template (issue 20 point 5): the shipped file is what the records code
renders, filled in it is what ``ourmail dns records`` prints, and published as a zone file
(parsed by dnspython, served by twisted.names on loopback) every record passes ``ourmail dns
check``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
from conftest import served_zone
from peers import dns as testdns
from twistdhelp import REPO
from twisted.names import dns as tdns

from ourmail.config import load_settings
from ourmail.dns.fromsettings import mail_setup
from ourmail.dns.records import expected_records
from ourmail.dns.template import fill, render_template, values_for
from ourmail.dns.zone import zone_snippet
from ourmail.secure.dkimkeys import KeyStore

TEMPLATE = REPO / "contrib" / "dns" / "zone.template"
DOMAIN, HOST = "example.net", "mail.example.net"
#: Addresses of this machine, so the host name's address checks pass.
ADDRESSES = ("127.0.0.1", "::1")


def test_the_shipped_template_is_what_the_code_renders() -> None:
    assert TEMPLATE.read_text() == render_template(), (
        "regenerate it: python -m ourmail.dns.template > contrib/dns/zone.template"
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder for the domain on the standard ports, with an RSA DKIM key (its record
    is longer than one TXT string)."""
    (tmp_path / "ourmail.toml").write_text(
        f'hostname = "{HOST}"\ndomains = ["{DOMAIN}"]\nports = "standard"\n'
    )
    KeyStore(tmp_path / "dkim").generate(DOMAIN, "202612r", "rsa")
    return tmp_path


def _filled(data: Path) -> tuple[str, str]:
    """The template filled for the data folder's domain, and the snippet of ``ourmail dns
    records`` for it."""
    settings = load_settings(data=str(data))
    setup = mail_setup(settings, DOMAIN, addresses=ADDRESSES)
    filled = fill(TEMPLATE.read_text(), values_for(setup))
    return filled, zone_snippet(setup, expected_records(setup))


def test_filled_in_it_is_what_dns_records_prints(data: Path) -> None:
    filled, printed = _filled(data)
    assert filled == printed
    assert "{{" not in filled


def test_a_placeholder_without_a_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="no value for dkim_algorithm, dkim_record"):
        fill(TEMPLATE.read_text(), {"domain": DOMAIN})


@pytest.fixture
def served() -> Iterator[tuple[testdns.TestZone, int]]:
    zone = testdns.TestZone()
    with served_zone(zone, 512) as number:
        yield zone, number


def load(zone: testdns.TestZone, text: str, origin: str | None = None) -> int:
    """Every record of the BIND zone ``text`` into ``zone``; how many."""
    parsed = dns.zone.from_text(text, origin, relativize=False, check_origin=False)
    count = 0
    for name, node in parsed.nodes.items():
        owner = name.to_text(omit_final_dot=True)
        for rdataset in node.rdatasets:
            kind = dns.rdatatype.to_text(rdataset.rdtype)
            rdatas = list(rdataset)
            count += len(rdatas)
            if kind == "MX":
                zone.set_mx(owner, [(r.preference, r.exchange.to_text(True)) for r in rdatas])
            elif kind in ("A", "AAAA"):
                addresses = zone.records.get((owner, tdns.A), [])
                zone.set_address(owner, *(r.address for r in rdatas))
                if kind == "AAAA":  # set_address replaces both families: keep the A
                    zone.records[(owner, tdns.A)] = addresses
            elif kind == "TXT":
                zone.set_txt(owner, *([s.decode() for s in r.strings] for r in rdatas))
            elif kind == "SRV":
                zone.set_records(owner, tdns.SRV, *(
                    tdns.Record_SRV(r.priority, r.weight, r.port, r.target.to_text(True))
                    for r in rdatas
                ))  # fmt: skip
            elif kind == "CNAME":
                zone.set_records(
                    owner, tdns.CNAME, tdns.Record_CNAME(rdatas[0].target.to_text(True))
                )
            elif kind == "PTR":
                zone.set_records(owner, tdns.PTR, tdns.Record_PTR(rdatas[0].target.to_text(True)))
            else:
                raise AssertionError(f"unexpected {kind} in the template")
    return count


def test_published_every_record_passes_dns_check(
    data: Path, served: tuple[testdns.TestZone, int]
) -> None:
    zone, port = served
    filled, _ = _filled(data)
    assert load(zone, filled) == 18
    # The reverse records the template shows as comments, set where the provider would.
    reverse = [
        line[2:] for line in filled.splitlines() if line.startswith("; ") and "\tPTR\t" in line
    ]
    assert len(reverse) == 2
    assert load(zone, "$TTL 3600\n" + "\n".join(reverse) + "\n", "arpa.") == 2
    done = subprocess.run(
        [sys.executable, "-m", "ourmail", "--data", str(data), "dns", "check", DOMAIN,
         "--server", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "19 pass, 0 warn, 0 fail"  # A and AAAA checked as one, done.stdout
    assert f"PASS  MX     {DOMAIN}: MX points at {HOST}" in lines
