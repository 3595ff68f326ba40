"""TLS (issue 7 point 8): only TLS 1.2 and 1.3, no weak ciphers, on every implicit-TLS port and
after STARTTLS."""

from __future__ import annotations

import socket
import ssl

import pytest
from conftest import RunningServer


def _client(version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def _handshake(ctx: ssl.SSLContext, port: int) -> str:
    with socket.create_connection(("127.0.0.1", port)) as sock, ctx.wrap_socket(sock) as tls:
        return str(tls.version())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_old_protocols_are_refused(mailserver: RunningServer) -> None:
    try:
        old = _client(ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    for service in ("imaps", "pop3s", "submissions", "web"):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(old, mailserver.port(service))


def test_current_protocols_work_and_weak_ciphers_do_not(mailserver: RunningServer) -> None:
    port = mailserver.port("imaps")
    assert _handshake(_client(ssl.TLSVersion.TLSv1_3), port) == "TLSv1.3"
    assert _handshake(_client(ssl.TLSVersion.TLSv1_2), port) == "TLSv1.2"
    for weak in ("RC4-SHA", "DES-CBC3-SHA", "NULL-SHA256", "AES128-SHA"):
        try:
            ctx = _client(ssl.TLSVersion.TLSv1_2, weak + ":@SECLEVEL=0")
        except ssl.SSLError:
            continue  # this OpenSSL does not have it at all
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(ctx, port)
