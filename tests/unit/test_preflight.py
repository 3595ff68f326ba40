"""Start-up checks (ourmail/preflight.py): what the configuration names must load, or the
server does not start, with one ConfigError line saying what is wrong."""

from __future__ import annotations

import socket
from pathlib import Path

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import reactor

from ourmail import preflight
from ourmail.config import ConfigError, QueueSettings, RelaySettings, load_settings
from ourmail.secure import selfsigned
from ourmail.service import build


def settings_for(tmp_path: Path, **changes: object):
    settings = load_settings(
        data=str(tmp_path / "data"),
        domains=("example.test",),
        hostname="mail.example.test",
        listen=("smtp=tcp:0:interface=127.0.0.1",),
    )
    listen = {svc: None for svc in settings.listen} | {"smtp": "tcp:0:interface=127.0.0.1"}
    return attrs.evolve(settings, listen=listen, **changes)


def refused(settings) -> str:
    with pytest.raises(ConfigError) as caught:
        build(settings, reactor)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_sound_configuration_builds(tmp_path: Path) -> None:
    build(settings_for(tmp_path), reactor)


def test_a_port_in_use_is_refused_before_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = settings_for(tmp_path)
        listen = dict(settings.listen) | {"imap": f"tcp:{port}:interface=127.0.0.1"}
        message = refused(attrs.evolve(settings, listen=listen))
    assert f"imap cannot listen on tcp:{port}" in message
    assert "already in use" in message


@pytest.mark.parametrize(
    ("endpoint", "words"),
    [
        ("nonsense:25", "Unknown endpoint type"),
        ("tcp:http", "is not a port number"),
        ("tcp:70000", "is not a port number"),
        ("tcp:2525:interface=192.0.2.77", "is not an address of this machine"),
        ("unix:/nonexistent/ourmail/lmtp.sock", "does not exist"),
        ("unix:/" + "x" * 120, "a unix socket path may have at most 107"),
    ],
)
def test_an_endpoint_that_cannot_work_is_refused(tmp_path: Path, endpoint: str, words: str) -> None:
    settings = settings_for(tmp_path)
    message = refused(attrs.evolve(settings, listen=dict(settings.listen) | {"lmtp": endpoint}))
    assert "lmtp" in message and words in message


def test_a_socket_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a socket")
    settings = settings_for(tmp_path)
    listen = dict(settings.listen) | {"lmtp": f"unix:{tmp_path / 'plain'}"}
    assert "is not a socket" in refused(attrs.evolve(settings, listen=listen))


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    selfsigned.ensure(cert, key, "mail.example.test")
    other = ec.generate_private_key(ec.SECP256R1())
    key.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    message = refused(settings_for(tmp_path, tls_certificate=cert, tls_key=key))
    assert "does not belong to the certificate" in message


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("?password_file=/nonexistent/ldap-password", "cannot read the LDAP password file"),
        ("?ca_file=/nonexistent/ca.pem", "cannot read the LDAP CA file"),
        ("?ca_file=GARBAGE", "holds no PEM certificate"),
        ("?schema=novell", "unknown LDAP schema"),
    ],
)
def test_an_ldap_url_that_cannot_work_is_refused(tmp_path: Path, query: str, words: str) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("no certificate here")
    url = "ldap://127.0.0.1:1/dc=example,dc=test" + query.replace("GARBAGE", str(garbage))
    assert words in refused(settings_for(tmp_path, ldap_url=url))


def test_an_unparseable_ldap_url_is_refused(tmp_path: Path) -> None:
    assert "not an LDAP URL" in refused(settings_for(tmp_path, ldap_url="http://x/dc=a"))


def test_a_module_that_does_not_load_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_module(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(preflight.importlib, "import_module", no_module)
    with pytest.raises(ConfigError, match="LDAP needs the Python package 'ldaptor'"):
        preflight.check_ldap("ldap://127.0.0.1/dc=example,dc=test")


def test_a_smart_host_whose_files_cannot_be_read_is_refused(tmp_path: Path) -> None:
    relay = RelaySettings(
        host="relay.example.test:587", username="u", password_file="/nonexistent/pw"
    )
    message = refused(settings_for(tmp_path, queue=QueueSettings(relay=relay)))
    assert "queue.relay.password_file" in message
    relay = RelaySettings(host="relay.example.test:587", ca_file="/nonexistent/ca.pem")
    message = refused(settings_for(tmp_path, queue=QueueSettings(relay=relay)))
    assert "queue.relay.ca_file" in message


def test_endpoint_strings_split_like_twisted() -> None:
    assert preflight.parse_endpoint(r"unix:/run/a\:b.sock:mode=660") == (
        "unix",
        ["/run/a:b.sock"],
        {"mode": "660"},
    )
    assert preflight.parse_endpoint(r"TCP:port=25:interface=\:\:1") == (
        "tcp",
        [],
        {"port": "25", "interface": "::1"},
    )


def test_a_shard_root_that_is_not_there_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    build(settings, reactor)
    (settings.data_dir / "shards.toml").write_text(
        '[[shard]]\nrange = "00-7f"\nroot = "mail"\n'
        f'[[shard]]\nrange = "80-ff"\nroot = "{tmp_path / "unmounted"}"\n'
    )
    message = refused(settings)
    assert f"the root {tmp_path / 'unmounted'} of shards 80-ff is not a folder" in message
    (tmp_path / "unmounted").mkdir()
    build(settings, reactor)


def test_a_reload_with_a_key_that_is_not_the_certificates_keeps_the_old_one(
    tmp_path: Path,
) -> None:
    from ourmail.net.tls import ReloadableServerTLS

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    selfsigned.ensure(cert, key, "mail.example.test")
    tls = ReloadableServerTLS(cert, key)
    before = tls._current
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert tls.reload() is False
    assert tls._current is before
