"""ACME as an admin runs it: ``twistd ourmail`` with ``[acme]`` on obtains its certificate from
Pebble; ``ourmail cert status`` shows it; ``ourmail cert renew`` asks the running server, which
renews at SIGHUP; with the server stopped ``ourmail cert renew`` orders by itself.  And a
SIGHUP reaches the MX worker processes, which reload a certificate of one's own."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import client_tls
from cryptography import x509
from peers.pebble import free_port, names_on_loopback, needs_pebble, running_pebble
from twistdhelp import Twistd

from ourmail.secure import selfsigned
from ourmail.secure.certfiles import ACMEFiles, read_info

pytestmark = [pytest.mark.system, needs_pebble]

NAMES = ("mail.example.test", "autoconfig.example.test", "mta-sts.example.test")


def serial_of(port: int) -> int:
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_tls().wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def ourmail(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("ourmail")), *args, "--data", str(data)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def wait_logged(server: Twistd, text: str, count: int = 1) -> None:
    for _ in range(600):
        if sum(text in line for line in server.log) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("\n".join(server.log[-30:]))


def test_twistd_obtains_renews_on_request_and_the_cli_renews_while_stopped(
    tmp_path: Path,
) -> None:
    http_port = free_port()
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with (
        names_on_loopback(NAMES) as dns_port,
        running_pebble(tmp_path / "pebble", http_port, dns_port) as pebble,
    ):
        (data / "ourmail.toml").write_text(
            'domains = ["example.test"]\nhostname = "mail.example.test"\n'
            "[smtp]\nmx_processes = 1\n"
            f'[listen]\nhttp = "tcp:{http_port}:interface=127.0.0.1"\n'
            f'[acme]\nenabled = true\ndirectory = "{pebble.directory}"\n'
            f'ca_file = "{pebble.ca_file}"\nemail = "postmaster@example.test"\n'
        )
        files = ACMEFiles.of(data)
        server = Twistd(data, (f"--listen=http=tcp:{http_port}:interface=127.0.0.1",))
        try:
            wait_logged(server, "new certificate from Pebble Intermediate CA")
            first = serial_of(server.ports["imaps"])
            info = read_info(files.certificate)
            assert info is not None and info.serial == first

            status = ourmail(data, "cert", "status")
            assert status.returncode == 0, status.stderr
            assert "source:   ACME" in status.stdout
            assert "Pebble Intermediate CA" in status.stdout
            assert "mta-sts.example.test" in status.stdout

            asked = ourmail(data, "cert", "renew")
            assert asked.returncode == 0, asked.stderr
            assert "server is running" in asked.stdout
            assert files.renew_request.exists()

            server.proc.send_signal(signal.SIGHUP)
            wait_logged(server, "new certificate from Pebble Intermediate CA", 2)
            for _ in range(100):
                if serial_of(server.ports["imaps"]) != first:
                    break
                time.sleep(0.05)
            second = serial_of(server.ports["imaps"])
            assert second != first
            assert serial_of(server.ports["submissions"]) == second
            assert not files.renew_request.exists()
        finally:
            server.stop()

        renewed = ourmail(data, "cert", "renew")
        assert renewed.returncode == 0, renewed.stderr
        assert "new certificate from Pebble Intermediate CA" in renewed.stdout
        info = read_info(files.certificate)
        assert info is not None and info.serial not in (first, second)


def test_cert_renew_with_acme_off_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text('domains = ["example.test"]\n')
    result = ourmail(data, "cert", "renew")
    assert result.returncode == 1
    assert "ACME is off" in result.stderr
    status = ourmail(data, "cert", "status")
    assert status.returncode == 0
    assert "acme:     off" in status.stdout


def test_sighup_reloads_an_own_certificate_in_the_mx_workers_too(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    own = tmp_path / "own"
    own.mkdir()
    cert, key = selfsigned.generate("mail.example.test")
    (own / "cert.pem").write_bytes(cert)
    (own / "key.pem").write_bytes(key)
    (data / "ourmail.toml").write_text(
        'domains = ["example.test"]\n[smtp]\nmx_processes = 2\n'
        f'[tls]\ncertificate = "{own / "cert.pem"}"\nkey = "{own / "key.pem"}"\n'
    )
    server = Twistd(data)
    try:
        wait_logged(server, "mx worker 1: accepting mail")
        cert, key = selfsigned.generate("mail.example.test")
        (own / "key.pem").write_bytes(key)
        (own / "cert.pem").write_bytes(cert)
        server.proc.send_signal(signal.SIGHUP)
        wait_logged(server, "mx worker 1: TLS certificate reloaded from")
        new = x509.load_pem_x509_certificate(cert).serial_number
        assert serial_of(server.ports["imaps"]) == new
        assert not any("mx worker 1 ended" in line for line in server.log)
    finally:
        server.stop()
