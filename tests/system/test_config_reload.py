"""SIGHUP re-reads ourmail.toml as well as the certificate (issue 20 point 4), in a real
``twistd -n ourmail``: an open IMAP session keeps working, the live settings take effect for
new sessions, a change that needs a restart says so, and a broken file is refused with the
parser's reason while the server runs on."""

from __future__ import annotations

import imaplib
import re
import signal
import smtplib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import client_tls
from twistdhelp import Twistd

from ourmail.secure import selfsigned

pytestmark = pytest.mark.system

#: In every version of the file: an MX worker process beside the master, whatever the cores.
WORKERS = "[smtp]\nmx_processes = 2\n"


def _appendlimit(capabilities: tuple[str, ...]) -> int:
    found = [c for c in capabilities if c.startswith("APPENDLIMIT=")]  # RFC 7889
    assert found, capabilities
    return int(found[0].split("=", 1)[1])


def _new_session_limit(port: int) -> int:
    with imaplib.IMAP4("127.0.0.1", port) as imap:
        return _appendlimit(imap.capabilities)


def _smtp_sizes(port: int, tries: int = 6) -> set[int]:
    """The SIZE (RFC 1870) of ``tries`` new SMTP sessions: the MX worker processes and the
    master share the port, so several connections reach each."""
    sizes = set()
    for _ in range(tries):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("client.example.test")
            sizes.add(int(smtp.esmtp_features["size"]))
    return sizes


def _cert_of(port: int) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port)) as sock,
        client_tls().wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def _health_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code


def _hangup_until(server: Twistd, pattern: str) -> str:
    """SIGHUP, then the first new log line matching ``pattern``."""
    seen = len(server.log)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in server.log[seen:]:
            if re.search(pattern, line):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(server.log[seen:]))


def test_sighup_reloads_configuration_and_certificate(tmp_path: Path) -> None:
    config = tmp_path / "ourmail.toml"
    config.write_text(WORKERS + "[limits]\nmax_message_size = 2000000\n")
    data = tmp_path / "data"
    server = Twistd(data, ("--config", str(config)))
    try:
        imap_port, http_port = server.ports["imap"], server.ports["http"]
        before = _cert_of(server.ports["imaps"])
        session = imaplib.IMAP4("127.0.0.1", imap_port)
        assert _appendlimit(session.capabilities) == 2_000_000
        assert _health_status(http_port) == 200
        assert _smtp_sizes(server.ports["smtp"]) == {2_000_000}

        config.write_text(
            WORKERS + "[limits]\nmax_message_size = 3000000\n"
            '[metrics]\nnetworks = ["192.0.2.0/24"]\n'
            "[queue]\nretry_first = 600\n"
        )
        cert, key = selfsigned.generate("mail.example.test")
        (data / "tls" / "cert.pem").write_bytes(cert)
        (data / "tls" / "key.pem").write_bytes(key)
        _hangup_until(server, r"\[metrics\] networks is now")
        log = "\n".join(server.log)
        assert "[limits] max_message_size is now 3000000 (was 2000000)" in log
        assert "[queue] retry_first changed but needs a restart" in log
        assert "TLS certificate reloaded" in log

        assert session.noop()[0] == "OK"  # the open session was not dropped
        assert _appendlimit(session.capability()[1][0].decode().split()) == 2_000_000
        assert _new_session_limit(imap_port) == 3_000_000  # new sessions: the new limits
        assert _health_status(http_port) == 403  # 127.0.0.1 is no longer allowed
        deadline = time.monotonic() + 10  # the MX workers reload in their own time
        while _smtp_sizes(server.ports["smtp"]) != {3_000_000}:
            assert time.monotonic() < deadline, server.log[-20:]
            time.sleep(0.2)
        assert _cert_of(server.ports["imaps"]) != before

        config.write_text(WORKERS + "[limits]\nmax_message_size = \n")
        line = _hangup_until(server, "configuration not reloaded")
        assert "the running one stays" in line
        assert "Invalid value (at line 4" in line  # the parser's reason
        assert "Traceback" not in "\n".join(server.log)
        assert session.noop()[0] == "OK"
        assert _new_session_limit(imap_port) == 3_000_000
        assert server.proc.poll() is None

        config.write_text(
            WORKERS
            + '[limits]\nmax_message_size = 3000000\n[metrics]\nnetworks = ["127.0.0.0/8"]\n'
        )
        _hangup_until(server, r"\[metrics\] networks is now")
        assert _health_status(http_port) == 200
        session.logout()
    finally:
        server.stop()


def test_a_sighup_while_the_server_starts_neither_stops_it_nor_is_lost(tmp_path: Path) -> None:
    # systemctl reload (a certificate hook, logrotate) while the server assembles itself:
    # SIGHUP's default action would end it, and systemd does not restart a unit that a
    # SIGHUP ended (Restart=on-failure counts it as clean).
    data = tmp_path / "data"

    def hangup_while_building(proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 30
        while not data.exists():  # made by the first start, inside the plugin's makeService
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGHUP)

    server = Twistd(data, starting=hangup_while_building)
    try:
        deadline = time.monotonic() + 15  # the held SIGHUP is acted on once started
        while not any("configuration reloaded: nothing changed" in x for x in server.log):
            assert time.monotonic() < deadline, server.log[-20:]
            time.sleep(0.1)
        assert server.proc.poll() is None
        with imaplib.IMAP4("127.0.0.1", server.ports["imap"]) as imap:
            assert imap.noop()[0] == "OK"
    finally:
        server.stop()
