"""The shared domain and DKIM changes of the CLI, the set-up wizard and the admin console."""

from __future__ import annotations

from pathlib import Path

import pytest

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings, load_settings
from ourmail.interfaces import AccountRefused
from ourmail.manage import domainops


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
