"""Recipients from LDAP (issue 8, second part) against a real slapd: delivery to a user, to an
alternate address and to a group; a disabled account; local accounts and LDAP together;
``may_send_as`` with an alternate address; LDAP down gives 451 4.4.3, never a bounce."""

from __future__ import annotations

import shutil
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls, running_server
from imaphelp import Session
from peers.slapd import SUFFIX, Slapd, slapd, user_ldif
from storehelp import on_reactor
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from ourmail.auth.accounts import AccountDB
from ourmail.directory.ldap import Connection, LDAPDirectory, LDAPSettings
from ourmail.directory.local import LocalDirectory
from ourmail.interfaces import Recipient

pytestmark = pytest.mark.skipif(shutil.which("slapd") is None, reason="scripts/test installs slapd")

DIRECTORY = (
    user_ldif("dana", "dana pw", "mailAlternateAddress: d.smith@example.test")
    + user_ldif("erin", "erin pw")
    + user_ldif("gone", "gone pw", "mailAccountStatus: disabled")
    + f"dn: cn=staff,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\nobjectClass: ourmailGroup\n"
    f"cn: staff\nmail: staff@example.test\nmember: uid=dana,ou=people,{SUFFIX}\n"
    f"member: uid=erin,ou=people,{SUFFIX}\nmember: uid=gone,ou=people,{SUFFIX}\n\n"
    f"dn: cn=board,ou=groups,{SUFFIX}\nobjectClass: groupOfUniqueNames\nobjectClass: ourmailGroup\n"
    f"cn: board\nmail: board@example.test\nuniqueMember: uid=erin,ou=people,{SUFFIX}\n\n"
)


@pytest.fixture
def directory() -> Iterator[Slapd]:
    with slapd(DIRECTORY) as server:
        yield server


@pytest.fixture
def srv(tmp_path: Path, directory: Slapd) -> Iterator[RunningServer]:
    with running_server(tmp_path, ldap_url=f"{directory.url}/{SUFFIX}?timeout=2") as server:
        yield server


def send(srv: RunningServer, rcpt: str, subject: str = "hi") -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
        s.ehlo()
        s.mail("bob@else.test")
        code, text = s.rcpt(rcpt)
        if code == 250:
            s.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
        return code, text


def inbox_count(srv: RunningServer, user: str, password: str) -> int:
    s = Session(srv, login=False)
    s.ok(f'LOGIN {user} "{password}"')
    lines = s.ok("SELECT INBOX")
    s.close()
    return int(next(x for x in lines if x.endswith(b" EXISTS")).split()[1])


def test_user_alternate_address_and_group(srv: RunningServer) -> None:
    assert send(srv, "dana@example.test")[0] == 250
    assert send(srv, "d.smith@example.test")[0] == 250  # delivers to dana
    assert send(srv, "staff@example.test")[0] == 250  # dana and erin; not the disabled one
    assert send(srv, "board@example.test")[0] == 250  # groupOfUniqueNames: erin
    assert inbox_count(srv, "dana", "dana pw") == 3
    assert inbox_count(srv, "erin", "erin pw") == 2


def test_disabled_and_unknown_are_refused(srv: RunningServer) -> None:
    assert send(srv, "gone@example.test")[0] == 550
    assert send(srv, "nobody@example.test")[0] == 550
    s = Session(srv, login=False)
    assert b"AUTHENTICATIONFAILED" in s.cmd('LOGIN gone "gone pw"')[-1]  # no login either
    s.close()


def test_local_accounts_work_alongside(srv: RunningServer) -> None:
    assert send(srv, srv.user)[0] == 250  # alice is local (accounts.json)
    assert inbox_count(srv, srv.user, srv.password) == 1


def test_send_as_an_alternate_address(srv: RunningServer) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), context=client_tls()) as s:
        s.login("dana", "dana pw")
        msg = b"From: d.smith@example.test\r\nTo: erin@example.test\r\nSubject: x\r\n\r\nx\r\n"
        assert s.sendmail("d.smith@example.test", ["erin@example.test"], msg) == {}


def test_ldap_down_is_451_never_a_bounce(srv: RunningServer, directory: Slapd) -> None:
    directory.stop()
    code, text = send(srv, "erin@example.test")
    assert code == 451 and b"4.4.3" in text
    assert send(srv, srv.user)[0] == 250  # local users are not affected
    directory.start()
    assert send(srv, "erin@example.test")[0] == 250


def test_quota_from_the_directory(tmp_path: Path) -> None:
    people = user_ldif("tiny", "tiny pw", "mailQuota: 300")
    with slapd(people) as small:
        url = f"{small.url}/{SUFFIX}?timeout=2"
        with running_server(tmp_path, ldap_url=url) as srv:
            assert send(srv, "tiny@example.test")[0] == 250  # under the limit so far
            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
                s.ehlo()
                assert s.mail("bob@else.test", ["SIZE=5000"])[0] == 250
                code, text = s.rcpt("tiny@example.test")
            assert code == 452 and b"4.2.2" in text  # mailQuota: 300 bytes


def test_a_hung_server_is_a_temporary_failure_after_the_timeout(
    srv: RunningServer, directory: Slapd
) -> None:
    # The server accepts connections but answers nothing (timeout=2 in the URL).
    directory.pause()
    try:
        started = time.monotonic()
        code, text = send(srv, "erin@example.test")
        assert code == 451 and b"4.4.3" in text
        assert time.monotonic() - started < 30  # not the SMTP idle timeout (300 s)
        s = Session(srv, login=False)
        assert b"[UNAVAILABLE]" in s.cmd('LOGIN erin "erin pw"')[-1]
        s.close()
    finally:
        directory.resume()
    assert send(srv, "erin@example.test")[0] == 250


def test_a_burst_of_lookups_shares_a_few_connections(
    tmp_path: Path, directory: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = LDAPSettings.from_urls(f"{directory.url}/{SUFFIX}?timeout=5")
    opened = []
    real_open = Connection.open
    monkeypatch.setattr(Connection, "open", lambda self: opened.append(1) or real_open(self))
    local = LocalDirectory(AccountDB(tmp_path), ["example.test"])

    def burst() -> Deferred[list[Recipient]]:
        ldap = LDAPDirectory(settings, reactor, local)
        names = [f"nobody{n}@example.test" for n in range(60)] + ["dana@example.test"]
        return gatherResults([ldap.lookup(a) for a in names])

    found = on_reactor(burst)
    assert [r.kind for r in found] == ["unknown"] * 60 + ["user"]
    assert len(opened) <= settings.max_connections
