"""Issue 17 point 6: mail clients find their settings: Thunderbird autoconfig, Outlook
autodiscover, Apple profiles (signed) and the MTA-STS policy, each parsed and checked field by
field against a real running server."""

from __future__ import annotations

import plistlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, running_server
from lxml import etree
from webhelp import Browser

from ourmail.config import ConfigError, load_settings
from ourmail.web.clientconfig import AD_OUTLOOK, AD_REQUEST, AD_RESPONSE

ADDRESS = "ann@example.test"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("autoconfig")) as server:
        yield server


def get(
    srv: RunningServer, path: str, host: str | None = None
) -> tuple[int, bytes, dict[str, str]]:
    reply = Browser(srv).request("GET", path, headers={"Host": host} if host else None)
    return reply.status, reply.body, reply.headers


def test_thunderbird_gets_imap_pop3_and_smtp_implicit_tls_first(srv: RunningServer) -> None:
    status, body, headers = get(
        srv, f"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={ADDRESS}"
    )
    assert status == 200 and headers["content-type"].startswith("application/xml")
    root = etree.fromstring(body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "example.test"
    assert provider.findtext("domain") == "example.test"
    incoming = [
        (
            s.get("type"),
            s.findtext("hostname"),
            int(s.findtext("port") or 0),
            s.findtext("socketType"),
        )
        for s in provider.findall("incomingServer")
    ]
    host = "mail.example.test"
    assert incoming == [
        ("imap", host, srv.port("imaps"), "SSL"),
        ("imap", host, srv.port("imap"), "STARTTLS"),
        ("pop3", host, srv.port("pop3s"), "SSL"),
        ("pop3", host, srv.port("pop3"), "STARTTLS"),
    ]
    outgoing = [
        (int(s.findtext("port") or 0), s.findtext("socketType"))
        for s in provider.findall("outgoingServer")
    ]
    assert outgoing == [(srv.port("submissions"), "SSL"), (srv.port("submission"), "STARTTLS")]
    for server in [*provider.findall("incomingServer"), *provider.findall("outgoingServer")]:
        assert server.findtext("username") == "%EMAILADDRESS%"
        assert server.findtext("authentication") == "password-cleartext"


def test_thunderbird_on_the_autoconfig_host(srv: RunningServer) -> None:
    status, body, _ = get(srv, "/mail/config-v1.1.xml", host="autoconfig.example.test")
    assert status == 200
    assert etree.fromstring(body).find("emailProvider").get("id") == "example.test"
    assert get(srv, "/mail/config-v1.1.xml", host="autoconfig.elsewhere.test")[0] == 404
    assert get(srv, "/mail/config-v1.1.xml", host="mail.example.test")[0] == 404


@pytest.mark.parametrize(
    "address", ["ann@elsewhere.test", "no-at-sign", "ann@" + "a" * 300 + ".test", "@"]
)
def test_no_settings_for_a_domain_not_served_here(srv: RunningServer, address: str) -> None:
    path = f"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={address}"
    assert get(srv, path, host="elsewhere.test")[0] == 404


def autodiscover_request(address: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{AD_REQUEST}"><Request>'
        f"<EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>{AD_OUTLOOK}"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


def post(srv: RunningServer, path: str, body: bytes) -> tuple[int, bytes]:
    reply = Browser(srv).request("POST", path, body, {"Content-Type": "text/xml"})
    return reply.status, reply.body


@pytest.mark.parametrize(
    "path", ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"]
)
def test_outlook_autodiscover(srv: RunningServer, path: str) -> None:
    status, body = post(srv, path, autodiscover_request(ADDRESS))
    assert status == 200
    root = etree.fromstring(body)
    assert root.tag == f"{{{AD_RESPONSE}}}Autodiscover"
    ns = {"o": AD_OUTLOOK}
    protocols = {p.findtext("o:Type", namespaces=ns): p for p in root.findall(".//o:Protocol", ns)}
    assert set(protocols) == {"IMAP", "POP3", "SMTP"}
    imap, smtp = protocols["IMAP"], protocols["SMTP"]
    assert imap.findtext("o:Server", namespaces=ns) == "mail.example.test"
    assert int(imap.findtext("o:Port", namespaces=ns) or 0) == srv.port("imaps")
    assert imap.findtext("o:SSL", namespaces=ns) == "on"
    assert imap.findtext("o:LoginName", namespaces=ns) == ADDRESS
    assert int(smtp.findtext("o:Port", namespaces=ns) or 0) == srv.port("submissions")
    assert smtp.findtext("o:AuthRequired", namespaces=ns) == "on"
    assert smtp.findtext("o:SPA", namespaces=ns) == "off"


def test_autodiscover_refuses_hostile_and_bad_requests(srv: RunningServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
        f'<Autodiscover xmlns="{AD_REQUEST}"><Request><EMailAddress>&x;</EMailAddress>'
        "</Request></Autodiscover>"
    ).encode()
    status, body = post(srv, "/autodiscover/autodiscover.xml", xxe)
    assert status == 400 and b"TOP-SECRET" not in body
    for bad in (
        b"",
        b"not xml",
        b"<a>" * 10_000,
        autodiscover_request("x" * 400 + "@example.test"),
    ):
        assert post(srv, "/autodiscover/autodiscover.xml", bad)[0] in (400, 413)
    assert (
        post(srv, "/autodiscover/autodiscover.xml", autodiscover_request("a@else.test"))[0] == 404
    )


def verified(signed: bytes) -> bytes:
    """The content of a CMS signature that OpenSSL verifies (the signature itself; the
    self-signed certificate's chain is not what is tested)."""
    out = subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-noverify"],
        input=signed,
        capture_output=True,
        check=True,
    )
    return out.stdout


def test_apple_profile_is_signed_and_complete(srv: RunningServer) -> None:
    status, body, headers = get(srv, f"/mobileconfig?email={ADDRESS}")
    assert status == 200
    assert headers["content-type"] == "application/x-apple-aspen-config"
    assert 'filename="example.test.mobileconfig"' in headers["content-disposition"]
    profile = plistlib.loads(verified(body))
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert account["EmailAddress"] == ADDRESS
    assert account["IncomingMailServerHostName"] == "mail.example.test"
    assert account["IncomingMailServerPortNumber"] == srv.port("imaps")
    assert account["IncomingMailServerUseSSL"] is True
    assert account["OutgoingMailServerPortNumber"] == srv.port("submissions")
    assert account["OutgoingPasswordSameAsIncomingPassword"] is True
    assert "IncomingPassword" not in account and "OutgoingPassword" not in account
    # The same profile again: the same identifiers, so a device replaces the account.
    again = plistlib.loads(verified(get(srv, f"/mobileconfig?email={ADDRESS}")[1]))
    assert again["PayloadUUID"] == profile["PayloadUUID"]
    assert get(srv, "/mobileconfig?email=ann@elsewhere.test")[0] == 404
    assert get(srv, "/mobileconfig")[0] == 404


def test_mta_sts_policy_on_its_host(srv: RunningServer) -> None:
    status, body, headers = get(srv, "/.well-known/mta-sts.txt", host="mta-sts.example.test")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert body == (
        b"version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\nmax_age: 604800\r\n"
    )
    assert get(srv, "/.well-known/mta-sts.txt", host="mta-sts.elsewhere.test")[0] == 404
    assert get(srv, "/.well-known/mta-sts.txt", host="example.test")[0] == 404


def test_the_policy_mode_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "ourmail.toml"
    config.write_text('[web]\nmta_sts_mode = "enforce"\n')
    assert (
        load_settings(
            config=str(config), data=str(tmp_path), domains=("example.test",)
        ).web.mta_sts_mode
        == "enforce"
    )
    config.write_text('[web]\nmta_sts_mode = "strict"\n')
    with pytest.raises(ConfigError, match="mta_sts_mode"):
        load_settings(config=str(config), data=str(tmp_path), domains=("example.test",))
