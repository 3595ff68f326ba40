"""The admin console's users from an LDAP directory (issue 17 point 4) against a real slapd
with some 560 people in two domains (more than slapd's default size limit of 500): listed in
address order under the local accounts, paged without gaps or repeats, searched live with the
text escaped (RFC 4515), scoped to a domain admin's domains (forged ``?domain=``: 403, logged),
one user's read-only page, and a directory that stops answering shown as a message."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from html import unescape
from urllib.parse import urlencode

import pytest
from conftest import RunningServer, running_server
from peers.slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, Slapd, free_port, slapd
from storehelp import on_reactor
from twisted.internet import reactor
from webhelp import Browser

from ourmail.auth.passwords import hash_password
from ourmail.config import AdminSettings
from ourmail.directory.ldap import LDAPSettings
from ourmail.directory.ldapusers import LDAPUserList
from ourmail.interfaces import DirectoryUnavailable, Usage

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which("slapd") is None, reason="scripts/test installs slapd"),
]

PASSWORD = "the postmaster's long password"
BOSS_PASSWORD = "the other domain's boss password"
#: Directory people: example.test and other.test, uids in no particular order.
EXAMPLE = [f"p{(n * 37) % 300:03d}@example.test" for n in range(300)]
OTHER = [f"q{(n * 11) % 260:03d}@other.test" for n in range(260)]


def person(address: str, *extra: str) -> str:
    uid = address.replace("@", ".")
    return "\n".join([
        f"dn: uid={uid},ou=people,{SUFFIX}",
        "objectClass: inetOrgPerson",
        "objectClass: ourmailUser",
        f"uid: {uid}",
        f"cn: {uid}",
        f"sn: {uid}",
        f"mail: {address}",
        *extra,
    ]) + "\n\n"  # fmt: skip


PEOPLE = (
    "".join(person(a) for a in EXAMPLE + OTHER)
    + person(
        "dana@example.test",
        "displayName: Dana Smith",
        "mailAlternateAddress: d.smith@example.test",
        "mailQuota: 2097152",
    )
    + f"dn: cn=staff,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\nobjectClass: ourmailGroup\n"
    f"cn: staff\nmail: staff@example.test\nmember: uid=dana.example.test,ou=people,{SUFFIX}\n\n"
    + "".join(
        f"dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\nobjectClass: ourmailGroup\n"
        f"cn: {cn}\nmail: {cn}\nmember: uid=q000.other.test,ou=people,{SUFFIX}\n\n"
        for cn in ("team@other.test", "council@example.test")
    )
)
ALL_EXAMPLE = sorted([*EXAMPLE, "dana@example.test"])


@pytest.fixture(scope="module")
def ldap() -> Iterator[Slapd]:
    with slapd(PEOPLE) as server:
        yield server


@pytest.fixture(scope="module")
def service_url(ldap: Slapd, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL with a service DN spared slapd's default size limit (500 entries: see
    ``test_a_size_limit_on_the_service_dn_is_an_incomplete_list``)."""
    secret = tmp_path_factory.mktemp("secret") / "ldap-password"
    secret.write_text(ADMIN_PASSWORD)
    return f"{ldap.url}/{SUFFIX}?timeout=5&" + urlencode(
        {"bind": ADMIN_DN, "password_file": secret}
    )


@pytest.fixture(scope="module")
def srv(service_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    admin = AdminSettings(
        admins=("postmaster@example.test",), domain_admins={"boss@other.test": ("other.test",)}
    )
    with running_server(
        tmp_path_factory.mktemp("console"), admin=admin, ldap_url=service_url
    ) as server:
        accounts = server.server.accounts
        accounts.set_password("postmaster@example.test", hash_password(PASSWORD))
        accounts.add_domain("other.test")
        accounts.add_user("boss@other.test", hash_password(BOSS_PASSWORD))
        yield server


def logged_in(srv: RunningServer, address: str, password: str) -> Browser:
    browser = Browser(srv)
    assert browser.login(address, password).status == 303
    return browser


def directory_part(text: str) -> list[str]:
    """The addresses listed under "From the directory"."""
    part = text.partition('id="directory-heading"')[2]
    return re.findall(r'href="/admin/directory/user\?address=([^"]+)"', unescape(part))


def walk(browser: Browser, query: dict[str, str]) -> list[str]:
    """Every directory address of a listing, following its "Next page" links."""
    seen: list[str] = []
    path = "/admin/users?" + urlencode(query)
    while path:
        page = browser.get(path)
        assert page.status == 200
        seen += [a.replace("%40", "@") for a in directory_part(page.text)]
        following = re.search(
            r'<a href="([^"]+)" rel="next">', page.text.partition("From the directory")[2]
        )
        path = unescape(following.group(1)).partition("#")[0] if following else ""
    return seen


def test_the_directory_is_listed_in_order_and_paged_without_gaps(srv: RunningServer) -> None:
    browser = logged_in(srv, "postmaster@example.test", PASSWORD)
    overview = browser.get("/admin")
    assert re.search(r"From the directory: <strong>561</strong>", overview.text)
    page = browser.get("/admin/users")
    assert "561 directory users match." in page.text
    assert "from the directory" in page.text
    assert walk(browser, {}) == sorted(ALL_EXAMPLE + OTHER)  # 12 pages: no gap, no repeat
    assert walk(browser, {"domain": "other.test"}) == sorted(OTHER)
    # The group is no user; the local accounts are still listed above.
    assert "staff@example.test" not in directory_part(page.text)
    assert "postmaster@example.test" in page.text.partition("From the directory")[0]


def test_a_search_asks_the_directory_with_the_text_escaped(srv: RunningServer) -> None:
    browser = logged_in(srv, "postmaster@example.test", PASSWORD)
    assert walk(browser, {"q": "p29"}) == [f"p29{n}@example.test" for n in range(10)]
    # By an extra address or the name, too.
    assert walk(browser, {"q": "d.smith"}) == ["dana@example.test"]
    assert walk(browser, {"q": "Dana Sm"}) == ["dana@example.test"]
    # Filter syntax in the search is text (RFC 4515 §3), never a wider search.
    for hostile in ("*)(uid=*", "*", ")(mail=*", "\\2a"):
        page = browser.get("/admin/users?" + urlencode({"q": hostile}))
        assert page.status == 200
        assert "0 directory users match." in page.text
        assert directory_part(page.text) == []


def test_one_directory_user_read_only(srv: RunningServer) -> None:
    browser = logged_in(srv, "postmaster@example.test", PASSWORD)
    moved = browser.get("/admin/user?" + urlencode({"address": "Dana@Example.test"}))
    assert moved.status == 303
    page = browser.get(moved.headers["location"])
    assert page.status == 200
    for shown in ("Dana Smith", "d.smith@example.test", "staff@example.test", "Limit: 2 MiB",
                  "Uses 0 MiB in 0 messages.", "change this user in the directory"):  # fmt: skip
        assert shown in page.text, shown
    assert 'action="/admin/user/' not in page.text  # no change forms
    missing = browser.get("/admin/directory/user?" + urlencode({"address": "nobody@example.test"}))
    assert missing.status == 404


def test_a_domain_admin_sees_only_their_domains(srv: RunningServer) -> None:
    browser = logged_in(srv, "boss@other.test", BOSS_PASSWORD)
    assert re.search(r"From the directory: <strong>260</strong>", browser.get("/admin").text)
    assert walk(browser, {}) == sorted(OTHER)
    assert walk(browser, {"q": "p0"}) == []  # example.test's people are not searched
    forged = browser.get("/admin/users?" + urlencode({"domain": "example.test", "q": "p"}))
    assert forged.status == 403 and "p001@example.test" not in forged.text
    # Of their user's groups, only their domains' ones.
    own = browser.get("/admin/directory/user?" + urlencode({"address": "q000@other.test"}))
    assert "team@other.test" in own.text and "council@example.test" not in own.text
    full = logged_in(srv, "postmaster@example.test", PASSWORD)
    assert (
        "council@example.test" in full.get("/admin/directory/user?address=q000%40other.test").text
    )
    peek = browser.get("/admin/directory/user?" + urlencode({"address": "dana@example.test"}))
    assert peek.status == 403 and "Dana Smith" not in peek.text
    lines = (srv.data / "log" / "audit.log").read_text("utf-8").splitlines()
    refused = [json.loads(line) for line in lines]
    assert {"who": "boss@other.test", "action": "users.view", "target": "example.test",
            "result": "forbidden"}.items() <= refused[-2].items()  # fmt: skip
    assert refused[-1]["action"] == "user.view" and refused[-1]["result"] == "forbidden"


def test_a_directory_that_does_not_answer_is_a_message(srv: RunningServer, ldap: Slapd) -> None:
    browser = logged_in(srv, "postmaster@example.test", PASSWORD)
    ldap.stop()
    try:
        searched = browser.get("/admin/users?q=p1")
        assert searched.status == 200
        assert "The directory cannot be reached just now" in searched.text
        assert "postmaster@example.test" in searched.text  # the local part still works
        one = browser.get("/admin/directory/user?" + urlencode({"address": "dana@example.test"}))
        assert one.status == 503 and "cannot be reached" in one.text
        # The list read before is still shown (read again after REFRESH seconds).
        assert "561 directory users match." in browser.get("/admin/users").text
    finally:
        ldap.start()


def test_a_size_limit_on_the_service_dn_is_an_incomplete_list(ldap: Slapd) -> None:
    settings = LDAPSettings.from_urls(f"{ldap.url}/{SUFFIX}?timeout=5")  # anonymous: 500 at most
    users = LDAPUserList(settings, reactor, lambda d: True, lambda a: Usage(0, 0))
    first = on_reactor(users.users, ["example.test", "other.test"], "", "", 450)
    page = on_reactor(users.users, ["example.test", "other.test"], "", first.addresses[-1], 100)
    assert page.total == 500 and not page.complete and len(page.addresses) == 50
    assert page.offset == 450


def test_no_list_yet_and_no_directory() -> None:
    settings = LDAPSettings.from_urls(f"ldap://127.0.0.1:{free_port()}/{SUFFIX}?timeout=2")
    users = LDAPUserList(settings, reactor, lambda d: True, lambda a: Usage(0, 0))
    with pytest.raises(DirectoryUnavailable):
        on_reactor(users.users, ["example.test"], "", "", 50)
    with pytest.raises(DirectoryUnavailable):
        on_reactor(users.count, ["example.test"])
    # An admin of no served domain asks nothing (an empty OR is no filter ldaptor sends).
    assert on_reactor(users.users, [], "x", "", 50).total == 0


def test_a_stale_list_is_read_again(ldap: Slapd, service_url: str) -> None:
    settings = LDAPSettings.from_urls(service_url)
    users = LDAPUserList(
        settings, reactor, lambda d: True, lambda a: Usage(0, 0), refresh=0, refresh_factor=0
    )
    assert on_reactor(users.count, ["other.test"]) == 260
    ldap.add(person("q999@other.test"))
    # The next pages get the list held until the new reading is in, then the new one.
    counts = [on_reactor(users.count, ["other.test"])]
    while counts[-1] == 260 and len(counts) < 200:
        time.sleep(0.05)
        counts.append(on_reactor(users.count, ["other.test"]))
    assert counts[-1] == 261
