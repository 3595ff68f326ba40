"""The directory's answers for the webmail's compose page: address completion from LDAP
(escaped filter, RFC 4515; bounded by a size limit) and the identities a user may send as."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.slapd import SUFFIX, Slapd, slapd, user_ldif
from storehelp import on_reactor
from twisted.internet import reactor

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password
from ourmail.directory.ldap import LDAPDirectory, LDAPSettings
from ourmail.directory.local import LocalDirectory
from ourmail.interfaces import Contact

pytestmark = pytest.mark.skipif(shutil.which("slapd") is None, reason="scripts/test installs slapd")

PEOPLE = user_ldif(
    "dana", "dana pw", "mailAlternateAddress: d.smith@example.test", "displayName: Dana Smith"
) + "".join(user_ldif(f"member{n}", "pw") for n in range(15))


@pytest.fixture
def server() -> Iterator[Slapd]:
    with slapd(PEOPLE) as found:
        yield found


def directory(tmp_path: Path, server: Slapd) -> LDAPDirectory:
    accounts = AccountDB(tmp_path)
    accounts.add_user("danube@example.test", hash_password("x"))
    settings = LDAPSettings.from_urls(f"{server.url}/{SUFFIX}?timeout=5")
    return LDAPDirectory(settings, reactor, LocalDirectory(accounts, ["example.test"]))


def test_completion_finds_local_accounts_then_ldap_entries(tmp_path: Path, server: Slapd) -> None:
    ldap = directory(tmp_path, server)
    found = on_reactor(ldap.search, "dan", 10)
    assert found == [Contact("danube@example.test"), Contact("dana@example.test", "Dana Smith")]
    # By an alternate address or the name, too.
    assert on_reactor(ldap.search, "d.smith", 10) == [Contact("dana@example.test", "Dana Smith")]


def test_completion_is_bounded_and_its_filter_escaped(tmp_path: Path, server: Slapd) -> None:
    ldap = directory(tmp_path, server)
    assert len(on_reactor(ldap.search, "member", 10)) == 10  # the server stops at 10
    assert len(on_reactor(ldap.search, "member", 3)) == 3
    # Filter syntax in the query is text (RFC 4515 §3), never a wider search.
    assert on_reactor(ldap.search, "*", 10) == []
    assert on_reactor(ldap.search, "x)(mail=*", 10) == []


def test_identities_include_the_entrys_addresses(tmp_path: Path, server: Slapd) -> None:
    ldap = directory(tmp_path, server)
    assert ldap.identities("dana@example.test") == ["dana@example.test"]
    on_reactor(ldap.lookup, "dana@example.test")  # a login or lookup learns the entry
    assert ldap.identities("dana@example.test") == ["dana@example.test", "d.smith@example.test"]
    assert all(
        ldap.may_send_as("dana@example.test", a) for a in ldap.identities("dana@example.test")
    )
