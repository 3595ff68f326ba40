"""The admin console's domains, DNS and certificates pages on a real server (issue 17 points
2, 4 and 5), its resolver pointed at the tests' loopback ``twisted.names`` zone: every record
kind is listed, the live check passes right records and fails wrong or missing ones, a dead
resolver gives "could not check" in bounded time, domains and DKIM keys are added through the
commands' code and audit-logged, a domain admin sees only their domains (403 for the others,
logged, nothing changed), and hostile ``domain`` values are refused with 400."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import RunningServer, dns_zone, running_server
from jinja2 import Environment, PackageLoader
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.threads import blockingCallFromThread
from twisted.names import dns
from webhelp import Browser, Response

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password
from ourmail.config import AdminSettings
from ourmail.dns.api import domain_records
from ourmail.dns.lookup import Lookup, make_resolver
from ourmail.dns.records import Record
from ourmail.interfaces import AcmeStatus, ListenerCertificate
from ourmail.net.portsfile import running_ports
from ourmail.secure.dkimkeys import KeyStore
from ourmail.web import i18n
from ourmail.web.admindomains import CheckLimiter

DOMAIN = "admindomains.test"
HOST = "mx.admindomains.test"
OTHER = "other-admindomains.test"
POSTMASTER = f"postmaster@{DOMAIN}"
BOSS = f"boss@{OTHER}"
PASSWORD = "a long enough admin password"


#: The module server's logged-in browsers and their CSRF tokens, by address.
_browsers: dict[str, tuple[Browser, str]] = {}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    admin = AdminSettings(admins=(POSTMASTER,), domain_admins={BOSS: (OTHER,)})
    tmp = tmp_path_factory.mktemp("admindomains")
    with running_server(tmp, domain=DOMAIN, hostname=HOST, admin=admin) as server:
        accounts = server.server.accounts
        accounts.set_password(POSTMASTER, hash_password(PASSWORD))
        accounts.add_domain(OTHER)
        accounts.add_user(BOSS, hash_password(PASSWORD))
        KeyStore(server.data / "dkim").generate(DOMAIN, "202612e", "ed25519")
        yield server
    _browsers.clear()


def browser(srv: RunningServer, address: str) -> Browser:
    """A browser logged in as ``address`` (once per module: logging in hashes a password)."""
    if address not in _browsers:
        b = Browser(srv)
        assert b.login(address, PASSWORD).status == 303
        m = re.search(r'data-csrf="([^"]+)"', b.get("/").text)
        assert m
        _browsers[address] = b, m.group(1)
    return _browsers[address][0]


def post(b: Browser, path: str, fields: dict[str, str], token: bool = True) -> Response:
    csrf = next(t for browser, t in _browsers.values() if browser is b)
    return b.post(path, {"csrf": csrf, **fields} if token else fields)


def audit(srv: RunningServer) -> list[dict[str, Any]]:
    path = srv.data / "log" / "audit.log"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def dns_page(b: Browser, domain: str) -> Response:
    return b.get("/admin/dns?" + urlencode({"domain": domain}))


def publish(records: list[Record]) -> None:
    """``records`` into the tests' zone, as an admin would paste them."""
    zone, _ = dns_zone()
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
            target = [(r.priority, r.weight, r.port, b"" if r.target == "." else r.target.encode())
                      for r in group]  # fmt: skip
            zone.set_records(name, dns.SRV, *(dns.Record_SRV(*t) for t in target))
        elif kind == "CNAME":
            zone.set_records(name, dns.CNAME, dns.Record_CNAME(group[0].target.encode()))


def cells(page: str) -> str:
    """``page`` without the cells' labels (shown on phones), so cells read ``<td>…</td>``."""
    return re.sub(r' data-label="[^"]*"', "", page)


def check_rows(page: str) -> dict[str, str]:
    """The check's table: "TYPE name" -> the result shown."""
    page = cells(page)
    rows = re.findall(
        r'<tr class="status-\w+">\s*<td><strong>([^<]+)</strong></td>\s*<td>(\w+)</td>\s*'
        r"<td>([^<]+)</td>",
        page,
    )
    return {f"{kind} {name}": result for result, kind, name in rows}


def test_the_dns_page_lists_every_record_and_checks_them(srv: RunningServer) -> None:
    b = browser(srv, POSTMASTER)
    page = dns_page(b, DOMAIN)
    assert page.status == 200
    text = cells(page.text)
    for shown in (
        "<td>MX</td>",
        f"<td>A</td>\n        <td>{HOST}</td>",
        "v=spf1 mx -all",
        f"202612e._domainkey.{DOMAIN}",
        f"v=DMARC1; p=none; rua=mailto:postmaster@{DOMAIN}",
        f"_mta-sts.{DOMAIN}",
        f"_smtp._tls.{DOMAIN}",
        f"_submissions._tcp.{DOMAIN}",
        f"_imaps._tcp.{DOMAIN}",
        f"_autodiscover._tcp.{DOMAIN}",
        f"<td>CNAME</td>\n        <td>autoconfig.{DOMAIN}</td>",
    ):
        assert shown in text, shown
    assert f"$ORIGIN {DOMAIN}." in text and '<pre id="zone"' in text  # the snippet, selectable
    assert 'data-copy="zone"' in text and "/static/admindomains.js" in text
    assert "<script>" not in text  # CSP: the copy button's script is a static file

    # Published as shown, the check passes them; then a wrong SPF and a missing DKIM key fail.
    ports = running_ports(srv.data)
    records = list(domain_records(srv.server.web.services.domains.settings, DOMAIN,  # type: ignore[union-attr]
                                  ("127.0.0.1",), ports).records)  # fmt: skip
    publish(records)
    checked = post(b, "/admin/dns/check", {"domain": DOMAIN})
    assert checked.status == 200, checked.text
    rows = check_rows(checked.text)
    assert rows[f"MX {DOMAIN}"] == "pass"
    assert rows[f"TXT 202612e._domainkey.{DOMAIN}"] == "pass"
    assert rows[f"TXT _dmarc.{DOMAIN}"] == "pass"
    assert rows[f"SRV _imaps._tcp.{DOMAIN}"] == "pass"
    assert rows[f"CNAME autoconfig.{DOMAIN}"] == "pass"
    assert rows[f"A {HOST}"] == "pass"

    zone, _ = dns_zone()
    zone.set_txt(DOMAIN, "v=spf1 +all")
    zone.clear(f"202612e._domainkey.{DOMAIN}")
    checked = post(b, "/admin/dns/check", {"domain": DOMAIN})
    rows = check_rows(checked.text)
    assert rows[f"TXT {DOMAIN}"] == "fail"
    assert "SPF has +all" in checked.text and "<code>v=spf1 +all</code>" in checked.text
    assert rows[f"TXT 202612e._domainkey.{DOMAIN}"] == "fail"
    assert rows[f"MX {DOMAIN}"] == "pass"


def test_a_dead_resolver_gives_could_not_check(srv: RunningServer) -> None:
    class Silent(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: Any) -> None:
            pass  # a resolver that never answers

    port = blockingCallFromThread(reactor, reactor.listenUDP, 0, Silent(), "127.0.0.1")
    domains = srv.server.web.services.domains  # type: ignore[union-attr]
    kept = domains.lookup, domains.deadline
    # Each try would wait 3 s: the check's own deadline (1 s) must end it first.
    domains.lookup = Lookup(make_resolver([f"127.0.0.1:{port.getHost().port}"]), (3,))
    domains.deadline = 1.0
    try:
        b = browser(srv, POSTMASTER)
        checked = post(b, "/admin/dns/check", {"domain": DOMAIN})
    finally:
        domains.lookup, domains.deadline = kept
        blockingCallFromThread(reactor, port.stopListening)
    assert checked.status == 200
    rows = check_rows(checked.text)
    assert rows and set(rows.values()) == {"could not check"}
    assert "no answer from DNS in time" in checked.text


def test_add_a_domain_and_make_its_dkim_key(srv: RunningServer) -> None:
    b = browser(srv, POSTMASTER)
    page = b.get("/admin/domains")
    assert page.status == 200
    assert DOMAIN in page.text and OTHER in page.text
    assert "configuration, primary" in page.text and "added" in page.text
    assert "202612e (ed25519): signing" in page.text

    added = post(b, "/admin/domains/add", {"domain": "New-AdminDomains.test"})
    assert added.status == 303
    shown = b.get(added.headers["location"])
    assert "The domain new-admindomains.test is now served here." in shown.text
    assert "new-admindomains.test" in AccountDB(srv.data).domains()
    again = post(b, "/admin/domains/add", {"domain": "new-admindomains.test"})
    assert again.status == 400 and "new-admindomains.test is already served here." in again.text
    configured = post(b, "/admin/domains/add", {"domain": DOMAIN})
    assert configured.status == 400 and "(from the configuration)" in configured.text

    made = post(b, "/admin/domains/dkim", {"domain": "new-admindomains.test"})
    assert made.status == 303
    (key,) = KeyStore(srv.data / "dkim").keys("new-admindomains.test")
    assert f"{key.selector} (rsa): signing" in b.get("/admin/domains").text
    twice = post(b, "/admin/domains/dkim", {"domain": "new-admindomains.test"})
    assert twice.status == 400 and "already has a DKIM key" in twice.text

    lines = [(a["action"], a["target"], a["result"], a["who"], a["via"]) for a in audit(srv)]
    for line in (
        ("domain.add", "new-admindomains.test", "ok", POSTMASTER, "web"),
        ("domain.add", "new-admindomains.test", "refused: exists", POSTMASTER, "web"),
        ("domain.add", DOMAIN, "refused: configured", POSTMASTER, "web"),
        ("dkim.gen", "new-admindomains.test", "ok", POSTMASTER, "web"),
        ("dkim.gen", "new-admindomains.test", "refused: has-key", POSTMASTER, "web"),
    ):
        assert line in lines, line


def test_a_domain_admin_manages_only_their_domains(srv: RunningServer) -> None:
    b = browser(srv, BOSS)
    page = b.get("/admin/domains")
    assert page.status == 200
    assert OTHER in page.text and f'<th scope="row">{DOMAIN}</th>' not in page.text
    assert "/admin/domains/add" not in page.text and "/admin/certificates" not in page.text
    assert dns_page(b, OTHER).status == 200

    domains_before = AccountDB(srv.data).domains()
    keys_before = sorted(k.path.name for k in KeyStore(srv.data / "dkim").keys(None, True))
    forged = [
        dns_page(b, DOMAIN),
        post(b, "/admin/dns/check", {"domain": DOMAIN}),
        post(b, "/admin/domains/add", {"domain": "boss-owned.test"}),
        post(b, "/admin/domains/add", {"domain": "boss-owned.test"}, token=False),
        post(b, "/admin/domains/dkim", {"domain": "new-admindomains.test"}),
        b.get("/admin/certificates"),
    ]
    assert [r.status for r in forged] == [403] * len(forged)
    assert AccountDB(srv.data).domains() == domains_before
    assert sorted(k.path.name for k in KeyStore(srv.data / "dkim").keys(None, True)) == keys_before
    refused = {(a["action"], a["target"]) for a in audit(srv) if a["result"] == "forbidden"}
    assert {
        ("dns.view", DOMAIN),
        ("dns.check", DOMAIN),
        ("domain.add", "boss-owned.test"),
        ("dkim.gen", "new-admindomains.test"),
        ("certificates.view", ""),
    } <= refused

    # Their own domain: a form without the CSRF token changes nothing; with it, the key is made.
    assert post(b, "/admin/domains/dkim", {"domain": OTHER}, token=False).status == 403
    assert post(b, "/admin/dns/check", {"domain": OTHER}, token=False).status == 403
    assert not list(KeyStore(srv.data / "dkim").keys(OTHER))
    assert post(b, "/admin/domains/dkim", {"domain": OTHER}).status == 303
    assert list(KeyStore(srv.data / "dkim").keys(OTHER))


HOSTILE = [
    "../etc/passwd",
    f"x\r\nSet-Cookie: a=b.{DOMAIN}",
    "<script>alert(1)</script>.test",
    "a" * 300 + ".test",
    f"{DOMAIN}\u202e",
]


def test_hostile_domain_values_are_refused(srv: RunningServer) -> None:
    b = browser(srv, POSTMASTER)
    before = AccountDB(srv.data).domains()
    answers = [b.get("/admin/dns?" + urlencode({"domain": value})) for value in HOSTILE]
    answers += [post(b, "/admin/domains/add", {"domain": value}) for value in HOSTILE]
    for value in HOSTILE[:2]:
        answers.append(post(b, "/admin/dns/check", {"domain": value}))
        answers.append(post(b, "/admin/domains/dkim", {"domain": value}))
    answers.append(b.get("/admin/dns"))  # none at all
    assert [a.status for a in answers] == [400] * len(answers)
    assert not any("<script>alert" in a.text for a in answers)
    assert AccountDB(srv.data).domains() == before


def test_the_certificates_page(srv: RunningServer) -> None:
    page = browser(srv, POSTMASTER).get("/admin/certificates")
    assert page.status == 200
    for listener in ("imaps", "submissions", "smtp", "web"):
        assert f'<th scope="row">{listener}</th>' in page.text
    assert HOST in page.text and "self-signed" in page.text
    assert "ACME is off" in page.text


def test_checks_are_limited_per_admin() -> None:
    limiter = CheckLimiter(most=2, window=60)
    assert limiter.start("a@x.test", 0)
    assert not limiter.start("a@x.test", 1)  # one at a time
    limiter.done("a@x.test")
    assert limiter.start("a@x.test", 2)
    limiter.done("a@x.test")
    assert not limiter.start("a@x.test", 3)  # two a minute
    assert limiter.start("b@x.test", 3)  # another admin
    assert limiter.start("a@x.test", 61)


def test_the_acme_state_is_shown_in_greek_too() -> None:
    """The certificates page with ``[acme]`` on (the template alone: Pebble runs elsewhere)."""
    templates = Environment(loader=PackageLoader("ourmail.web", "templates"), autoescape=True)
    greek = i18n.translations("el")
    page = templates.get_template("admin_certificates.html").render(
        _=greek.gettext,
        ngettext=greek.ngettext,
        lang="el",
        languages=i18n.LANGUAGES,
        full_admin=True,
        listeners=[
            ListenerCertificate(
                "imaps",
                "ACME",
                "/d/tls/acme/cert.pem",
                (HOST,),
                "Pebble",
                "2027-01-31T10:00+00:00",
                61,
            )
        ],
        acme=AcmeStatus(
            enabled=True,
            directory="https://ca.test/dir",
            renew_days=30,
            required=(HOST,),
            optional=(f"autoconfig.{DOMAIN}",),
            left_out=(
                (f"autoconfig.{DOMAIN}", "2026-12-01T09:00+00:00", "2026-12-08T09:00+00:00"),
            ),
            renew_after="2027-01-01T10:00+00:00",
        ),
    )
    text = re.sub(r"\s+", " ", cells(page))
    assert "<td>Pebble</td> <td>2027-01-31 10:00</td> <td>61</td> <td>ACME</td>" in text
    assert f"Παραλείφθηκε: autoconfig.{DOMAIN}" in text and "2026-12-08 09:00 UTC" in text
    assert "Επόμενη ανανέωση</dt> <dd>μετά τις 2027-01-01 10:00 UTC (30 ημέρες" in text
