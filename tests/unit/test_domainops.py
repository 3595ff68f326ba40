"""The shared domain and DKIM changes of the CLI, the set-up wizard and the admin console."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from loghelp import captured
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.task import Clock
from twisted.names import dns

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings, load_settings
from ourmail.dns import fromsettings
from ourmail.dns.api import domain_records
from ourmail.dns.lookup import Lookup
from ourmail.interfaces import AccountRefused, DkimKeyInfo, DnsCheckRow
from ourmail.manage import domainops
from ourmail.manage.domainadmin import LocalDomainAdmin, key_infos
from ourmail.secure import dkimkeys
from ourmail.secure.dkimkeys import KeyError_, KeyExists, KeyStore, check_name, default_selector


def settings(tmp_path: Path) -> Settings:
    return load_settings(data=str(tmp_path), domains=("example.org",), is_root=False)


def test_add_domain_normalises_and_refuses_twice(tmp_path: Path) -> None:
    s, db = settings(tmp_path), AccountDB(tmp_path)
    assert domainops.add_domain(s, db, " Δήμος.GR. ") == "xn--jxalzmu.gr"
    assert db.domains() == ["xn--jxalzmu.gr"]
    with pytest.raises(AccountRefused) as again:
        domainops.add_domain(s, db, "xn--jxalzmu.gr")
    assert again.value.code == "exists"
    with pytest.raises(AccountRefused) as configured:
        domainops.add_domain(s, db, "EXAMPLE.org")
    assert configured.value.code == "configured"


@pytest.mark.parametrize("raw", ["", "../etc", "a b.org", "x" * 300, "exa\r\nmple.org", "-a.org"])
def test_add_domain_refuses_what_is_not_a_domain(tmp_path: Path, raw: str) -> None:
    s, db = settings(tmp_path), AccountDB(tmp_path)
    with pytest.raises(AccountRefused) as refused:
        domainops.add_domain(s, db, raw)
    assert refused.value.code == "bad-domain"
    assert db.domains() == []


def test_ensure_dkim_key_makes_one_key_then_keeps_it(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert domainops.signing_keys(s, "example.org") == []
    (made,) = domainops.ensure_dkim_key(s, "Example.org")
    assert made.domain == "example.org" and made.algorithm == "rsa"
    assert made.path.stat().st_mode & 0o777 == 0o600
    assert "v=DKIM1" in made.dns_record()
    assert [k.path for k in domainops.ensure_dkim_key(s, "example.org")] == [made.path]
    with pytest.raises(AccountRefused):
        domainops.ensure_dkim_key(s, "../../etc")


def test_a_key_is_linked_whole_and_its_directory_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path / "dkim")
    synced: list[Path] = []
    monkeypatch.setattr(dkimkeys, "fsync_dir", lambda p: synced.append(Path(p)))
    key = store.generate("example.org", "s1", "ed25519")
    assert synced == [tmp_path / "dkim" / "example.org", tmp_path / "dkim"]
    assert [p.name for p in key.path.parent.iterdir()] == ["s1.key"]  # no temporary left
    assert key.path.read_bytes() == key.pem and key.path.stat().st_mode & 0o777 == 0o600


def test_two_makers_of_one_selector_get_one_key_and_one_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path / "dkim")
    mkstemp = dkimkeys.tempfile.mkstemp

    def other_admin_first(**kwargs: Any) -> tuple[int, str]:
        # The other request links its key after this one checked the name was free.
        (kwargs["dir"] / "s1.key").write_bytes(b"the other key")
        return mkstemp(**kwargs)

    monkeypatch.setattr(dkimkeys.tempfile, "mkstemp", other_admin_first)
    with pytest.raises(KeyExists):
        store.generate("example.org", "s1", "ed25519")
    folder = tmp_path / "dkim" / "example.org"
    assert [p.name for p in folder.iterdir()] == ["s1.key"]
    assert (folder / "s1.key").read_bytes() == b"the other key"


def test_a_key_made_meanwhile_is_refused_as_has_key(tmp_path: Path) -> None:
    s = settings(tmp_path)
    other = domainops.dkim_keys(s).generate("example.org", default_selector("rsa"), "ed25519")
    with pytest.raises(AccountRefused) as refused:
        domainops.new_dkim_key(s, "example.org")
    assert refused.value.code == "has-key"
    assert [k.path for k in domainops.ensure_dkim_key(s, "example.org")] == [other.path]


def test_a_retired_key_of_this_month_gets_the_next_free_selector(tmp_path: Path) -> None:
    s = settings(tmp_path)
    store = domainops.dkim_keys(s)
    base = default_selector("rsa")
    store.generate("example.org", base, "ed25519")
    store.retire("example.org", base)
    (made,) = domainops.ensure_dkim_key(s, "example.org")
    assert made.selector == f"{base}-2"
    check_name("example.org", made.selector)


def test_a_key_that_cannot_be_made_is_logged(tmp_path: Path) -> None:
    s = settings(tmp_path)
    (tmp_path / "dkim").write_text("not a directory")
    with captured() as events, pytest.raises(AccountRefused) as refused:
        domainops.ensure_dkim_key(s, "example.org")
    assert refused.value.code == "dkim"
    assert "no key made for example.org" in events.text()


def test_an_unreadable_key_file_is_listed_not_raised(tmp_path: Path) -> None:
    s = settings(tmp_path)
    good = domainops.dkim_keys(s).generate("example.org", "good", "ed25519")
    (good.path.parent / "bad.key").write_bytes(b"")
    with pytest.raises(KeyError_):  # the commands still say which file is broken
        list(domainops.dkim_keys(s).keys("example.org"))
    with pytest.raises(KeyError_):
        fromsettings.dkim_keys(s, "example.org")
    with captured() as events:
        infos = key_infos(s, "example.org")
        key_infos(s, "example.org")
        assert [k.selector for k in domainops.signing_keys(s, "example.org")] == ["good"]
        shown = fromsettings.dkim_keys(s, "example.org", dkimkeys.report_unreadable)
        assert [k.selector for k in shown] == ["good"]
    assert infos == (
        DkimKeyInfo("bad", "", True, readable=False),
        DkimKeyInfo("good", "ed25519", True),
    )
    assert events.text().count("bad.key") == 1  # logged once, not on every page view


class _NoAAAA:
    """A resolver with an A record for every name that never answers AAAA questions."""

    def query(self, query: dns.Query, timeout: Any) -> Deferred[Any]:
        if query.type == dns.AAAA:
            return fail(TimeoutError())
        header = dns.RRHeader(query.name.name, dns.A, payload=dns.Record_A("192.0.2.10"))
        return succeed(([header], [], []))


def test_an_aaaa_time_out_leaves_the_a_records_verdict(tmp_path: Path) -> None:
    s = settings(tmp_path)
    admin = LocalDomainAdmin(s, None, Lookup(_NoAAAA()), Clock())  # type: ignore[arg-type]
    found = domain_records(s, "example.org", ("192.0.2.10",))
    (address,) = [r for r in found.records if r.kind == "address"][:1]
    rows: list[DnsCheckRow] = []
    admin._check_one(found, address).addCallback(rows.append)
    (checked,) = rows
    assert checked.status == "warn" and "192.0.2.10" in checked.found
    assert checked.reason.endswith("(AAAA: no answer from DNS)")


def test_the_address_hint_is_kept_a_minute_and_a_refusal_asks_no_dns(tmp_path: Path) -> None:
    asked: list[int] = []

    class Counting(_NoAAAA):
        def query(self, query: dns.Query, timeout: Any) -> Deferred[Any]:
            asked.append(query.type)
            return super().query(query, timeout)

    clock = Clock()
    admin = LocalDomainAdmin(settings(tmp_path), None, Lookup(Counting()), clock)  # type: ignore[arg-type]

    def hint(ask_dns: bool = True) -> tuple[str, ...]:
        found: list[tuple[str, ...]] = []
        Deferred.fromCoroutine(admin._addresses(1.5, ask_dns)).addCallback(found.append)
        return found[0]

    assert hint(ask_dns=False) == () and asked == []  # nothing kept: a 429 asks nothing
    assert hint() == ("192.0.2.10",) and asked == [dns.A, dns.AAAA]
    clock.advance(59)
    assert hint() == hint(ask_dns=False) == ("192.0.2.10",) and len(asked) == 2
    clock.advance(2)
    assert hint() == ("192.0.2.10",) and len(asked) == 4
