"""Active Directory's shape (``schema=ad``) against a real slapd loaded with AD-like entries:
login by ``sAMAccountName``, ``userPrincipalName`` or ``mail``; ``proxyAddresses`` values
(``SMTP:``, ``smtp:``, ``X500:``); ``userAccountControl`` bit 2 for disabled accounts; an AD
``group`` with a ``mail``; and the option parsing behind it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, running_server
from imaphelp import Session
from ldaptor.entry import BaseLDAPEntry
from peers.slapd import SUFFIX, slapd
from test_ldap_directory import inbox_count, send

from ourmail.config import ConfigError
from ourmail.directory.ldap import LDAPSettings, _member_dns

pytestmark = pytest.mark.skipif(shutil.which("slapd") is None, reason="scripts/test installs slapd")


def ad_user(name: str, password: str, control: int, *proxies: str) -> str:
    """A person as AD shows one: ``cn=<name>,ou=people``, ``sAMAccountName``, a UPN in the
    Windows domain (not the mail domain), ``userAccountControl`` and ``proxyAddresses``."""
    lines = [
        f"dn: cn={name},ou=people,{SUFFIX}",
        "objectClass: inetOrgPerson",
        "objectClass: user",
        "objectCategory: person",
        f"cn: {name}",
        f"sn: {name}",
        f"sAMAccountName: {name}",
        f"userPrincipalName: {name}@corp.local",
        f"mail: {name}@example.test",
        f"userAccountControl: {control}",
        f"userPassword: {password}",
        *(f"proxyAddresses: {p}" for p in proxies),
    ]
    return "\n".join(lines) + "\n\n"


DIRECTORY = (
    ad_user(
        "frank",
        "frank pw",
        512,  # NORMAL_ACCOUNT
        "SMTP:frank@example.test",
        "smtp:f.jones@example.test",
        "X500:/o=Corp/ou=Exchange/cn=Recipients/cn=frank",
        "sip:frank@example.test",
    )
    + ad_user("gina", "gina pw", 514)  # NORMAL_ACCOUNT | ACCOUNTDISABLE
    + f"dn: cn=Team,ou=groups,{SUFFIX}\nobjectClass: group\nobjectCategory: group\ncn: Team\n"
    f"mail: team@example.test\nproxyAddresses: SMTP:team@example.test\n"
    f"member: cn=frank,ou=people,{SUFFIX}\nmember: cn=gina,ou=people,{SUFFIX}\n\n"
    # A group in a group, with a loop back: frank is reached once, the loop ends.
    f"dn: cn=All,ou=groups,{SUFFIX}\nobjectClass: group\ncn: All\nmail: all@example.test\n"
    f"member: cn=Team,ou=groups,{SUFFIX}\nmember: cn=All,ou=groups,{SUFFIX}\n"
    f"member: cn=frank,ou=people,{SUFFIX}\n\n"
    f"dn: cn=Ghosts,ou=groups,{SUFFIX}\nobjectClass: group\ncn: Ghosts\n"
    f"mail: ghosts@example.test\nmember: cn=gina,ou=people,{SUFFIX}\n\n"
)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    with slapd(DIRECTORY) as directory:
        url = f"{directory.url}/{SUFFIX}?schema=ad&timeout=2"
        with running_server(tmp_path, ldap_url=url) as server:
            yield server


@pytest.mark.parametrize("login", ["frank", "frank@corp.local", "frank@example.test", "FRANK"])
def test_login_by_account_name_principal_name_or_mail(srv: RunningServer, login: str) -> None:
    assert inbox_count(srv, login, "frank pw") == 0


def test_proxy_addresses_deliver_and_other_types_are_ignored(srv: RunningServer) -> None:
    assert send(srv, "frank@example.test")[0] == 250
    assert send(srv, "f.jones@example.test")[0] == 250  # smtp: an extra address
    assert send(srv, "F.Jones@Example.Test")[0] == 250  # addresses match case-insensitively
    assert send(srv, "team@example.test")[0] == 250  # the group; gina is disabled
    assert send(srv, "all@example.test")[0] == 250  # nested: Team's members, frank once
    assert inbox_count(srv, "frank", "frank pw") == 5
    assert not list(srv.data.rglob("team*")), "a group is never a mailbox"


def test_a_disabled_account_neither_logs_in_nor_receives(srv: RunningServer) -> None:
    assert send(srv, "gina@example.test")[0] == 550
    assert send(srv, "ghosts@example.test")[0] == 550  # a group with nobody to deliver to
    s = Session(srv, login=False)
    assert b"AUTHENTICATIONFAILED" in s.cmd('LOGIN gina "gina pw"')[-1]
    s.close()


def test_schema_presets_and_their_overrides() -> None:
    base = "ldap://dc.corp.local/dc=corp,dc=local"
    ad = LDAPSettings.from_urls(f"{base}?schema=ad")
    assert ad.alternate_attribute == "proxyAddresses"
    assert ad.disabled == "userAccountControl&2"
    assert "sAMAccountName=%s" in ad.user_filter
    mine = LDAPSettings.from_urls(f"{base}?schema=AD&disabled=extensionAttribute1=off")
    assert mine.disabled_attribute == "extensionAttribute1"
    assert LDAPSettings.from_urls(base).alternate_attribute == "mailAlternateAddress"
    for bad in ("schema=novell", "disabled=userAccountControl&two", "disabled=(x=1)"):
        with pytest.raises(ConfigError):
            LDAPSettings.from_urls(f"{base}?{bad}")


def test_disabled_tests_bits_or_a_value() -> None:
    base = "ldap://dc/dc=x"
    bits = LDAPSettings.from_urls(f"{base}?disabled=userAccountControl%260x12")
    assert bits.is_disabled({"userAccountControl": [b"528"]})  # 0x210: LOCKOUT (0x10)
    assert not bits.is_disabled({"userAccountControl": [b"512"]})
    assert not bits.is_disabled({"userAccountControl": [b"not a number"]})
    value = LDAPSettings.from_urls(f"{base}?disabled=status=Off")
    assert value.is_disabled({"status": [b"off"]}) and not value.is_disabled({})


def test_a_large_groups_first_member_range_is_read() -> None:
    # AD sends the members of a group of more than 1,500 as member;range=0-1499.
    group = BaseLDAPEntry(
        f"cn=Big,ou=groups,{SUFFIX}",
        {"objectClass": [b"group"], "member;range=0-1499": [b"cn=a", b"cn=b"]},
    )
    assert sorted(_member_dns(group)) == ["cn=a", "cn=b"]  # a set of values: no order
