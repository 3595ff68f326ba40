"""Directory login over LDAP (issue 8, first part) against a real OpenLDAP slapd: login over
IMAP, POP3 and submission; wrong passwords; filter injection (RFC 4515); slapd down gives
temporary failures, never a login; failover to a second slapd."""

from __future__ import annotations

import poplib
import shutil
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls, running_server
from peers.slapd import SUFFIX, Slapd, slapd, user_ldif
from rawclient import RawClient
from twisted.internet import reactor

from ourmail.config import ConfigError
from ourmail.directory.ldap import LDAPChecker, LDAPSettings, escape_filter_value
from ourmail.secure import selfsigned

pytestmark = pytest.mark.skipif(shutil.which("slapd") is None, reason="scripts/test installs slapd")

PEOPLE = (
    user_ldif("dana", "dana pw")
    + user_ldif("erin", "erin pw")
    + user_ldif("a*", "star pw")  # a name made of filter metacharacters
)


@pytest.fixture
def directory() -> Iterator[Slapd]:
    with slapd(PEOPLE) as server:
        yield server


def _server(tmp_path: Path, *urls: str) -> Iterator[RunningServer]:
    """A server logging in against ``urls`` (each with the base DN, or given whole with a
    query)."""
    full = [u if "?" in u else f"{u}/{SUFFIX}?timeout=2" for u in urls]
    settings = LDAPSettings.from_urls(" ".join(full))
    with running_server(tmp_path, checkers=[LDAPChecker(settings, reactor)]) as srv:
        yield srv


@pytest.fixture
def srv(tmp_path: Path, directory: Slapd) -> Iterator[RunningServer]:
    yield from _server(tmp_path, directory.url)


def imap_login(srv: RunningServer, user: str, password: str) -> str:
    """LOGIN with both arguments as literals (any octets); "OK" or the tagged reply."""
    c = RawClient(srv.port("imaps"), tls=True)
    c.line()
    name, secret = user.encode(), password.encode()
    c.send(b"a LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(name), name, len(secret), secret))
    reply = c.until(b"a ")[-1].decode()
    c.close()
    return "OK" if reply.startswith("a OK") else reply


def test_login_over_imap_pop3_and_submission(srv: RunningServer) -> None:
    assert imap_login(srv, "dana@example.test", "dana pw") == "OK"
    assert imap_login(srv, "dana", "dana pw") == "OK"  # uid works too: (|(mail=%s)(uid=%s))
    assert "AUTHENTICATIONFAILED" in imap_login(srv, "dana", "wrong")
    assert "AUTHENTICATIONFAILED" in imap_login(srv, "nobody", "dana pw")
    p = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=client_tls())
    p.user("erin@example.test")
    assert p.pass_("erin pw").startswith(b"+OK")
    p.quit()
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), context=client_tls()) as s:
        assert s.login("dana@example.test", "dana pw")[0] == 235


@pytest.mark.parametrize("name", ["*", "d*", "*)(uid=*", "dana)(|(uid=*", "\\", "dana\x00", "a*"])
def test_filter_injection_never_matches_another_entry(srv: RunningServer, name: str) -> None:
    for password in ("dana pw", "erin pw", "x"):
        assert "AUTHENTICATIONFAILED" in imap_login(srv, name, password), (name, password)


def test_a_name_with_metacharacters_still_logs_in_as_itself(srv: RunningServer) -> None:
    assert imap_login(srv, "a*", "star pw") == "OK"  # escaped, it matches exactly uid=a*


def test_empty_password_is_no_unauthenticated_bind(srv: RunningServer) -> None:
    assert "AUTHENTICATIONFAILED" in imap_login(srv, "dana", "")


def test_ldap_down_is_a_temporary_failure_everywhere(srv: RunningServer, directory: Slapd) -> None:
    directory.stop()
    assert "UNAVAILABLE" in imap_login(srv, "dana", "dana pw")
    p = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=client_tls())
    p.user("dana")
    with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
        p.pass_("dana pw")
    p.close()
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), context=client_tls()) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("dana", "dana pw")
        assert e.value.smtp_code == 454
    directory.start()
    assert imap_login(srv, "dana", "dana pw") == "OK"


def test_failover_to_a_second_server(tmp_path: Path, directory: Slapd) -> None:
    with slapd(user_ldif("dana", "dana pw")) as second:
        for srv in _server(tmp_path, directory.url, second.url):
            directory.stop()
            assert imap_login(srv, "dana", "dana pw") == "OK"  # the second answers


def test_settings_from_urls() -> None:
    s = LDAPSettings.from_urls(
        "ldaps://a.example/dc=x,dc=y?bind=cn=mail,dc=x&password_file=/etc/pw ldap://b/dc=x,dc=y"
        "?starttls=1"
    )
    assert [(x.host, x.port, x.tls) for x in s.servers] == [
        ("a.example", 636, "ldaps"),
        ("b", 389, "starttls"),
    ]
    assert s.base == "dc=x,dc=y" and s.bind_dn == "cn=mail,dc=x"
    for bad in ("http://x/dc=y", "ldap://x", "ldap://x/dc=y?filter=(uid=x)", "ldap:///dc=y"):
        with pytest.raises(ConfigError):
            LDAPSettings.from_urls(bad)
    assert escape_filter_value("a*(b)\\\0") == "a\\2a\\28b\\29\\5c\\00"


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
def test_login_over_tls_with_a_verified_certificate(tmp_path: Path, mode: str) -> None:
    with slapd(user_ldif("dana", "dana pw"), tls=True) as secure:
        ca = secure.work / "cert.pem"
        if mode == "starttls":
            url = secure.url.replace("127.0.0.1", "localhost") + f"/{SUFFIX}?starttls=1"
        else:
            url = f"{secure.ldaps_url}/{SUFFIX}?x=1"
        for srv in _server(tmp_path / "right", url + f"&ca_file={ca}"):
            assert imap_login(srv, "dana", "dana pw") == "OK"
        # Another CA: the certificate does not verify, so the directory counts as unreachable.
        other = tmp_path / "other-ca.pem"
        other.write_bytes(selfsigned.generate("localhost")[0])
        for srv in _server(tmp_path / "wrong", url + f"&ca_file={other}"):
            assert "UNAVAILABLE" in imap_login(srv, "dana", "dana pw")
