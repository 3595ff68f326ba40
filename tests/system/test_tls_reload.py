"""SIGHUP reloads the TLS certificate (issue 7 point 8): new connections get the new one, an
open session keeps working, and a broken file leaves the old certificate in place."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from conftest import client_tls
from twistdhelp import Twistd

from ourmail.secure import selfsigned


def _cert_of(port: int) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port)) as sock,
        client_tls().wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def _hangup_until(server: Twistd, port: int, changed: bool, old: bytes) -> bytes:
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = _cert_of(port)
        if (now != old) == changed and any("TLS certificate" in x for x in server.log[-5:]):
            return now
        time.sleep(0.1)
    raise AssertionError("\n".join(server.log[-20:]))


def test_sighup_reloads_the_certificate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Twistd(data)
    try:
        port = server.ports["imaps"]
        before = _cert_of(port)
        session = client_tls().wrap_socket(socket.create_connection(("127.0.0.1", port)))
        greeting = session.recv(1000)
        assert greeting.startswith(b"* OK")
        cert, key = selfsigned.generate("mail.example.test")
        (data / "tls" / "cert.pem").write_bytes(cert)
        (data / "tls" / "key.pem").write_bytes(key)
        after = _hangup_until(server, port, changed=True, old=before)
        assert after != before
        assert any("TLS certificate reloaded" in x for x in server.log)
        session.sendall(b"a NOOP\r\n")  # the open session was not dropped
        assert session.recv(1000).startswith(b"a OK")
        session.close()
        (data / "tls" / "key.pem").write_text("not a key")
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not any("not reloaded" in x for x in server.log) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("TLS certificate not reloaded" in x for x in server.log)
        assert _cert_of(port) == after  # the good one stays
        assert server.proc.poll() is None
    finally:
        server.stop()
