"""ACME certificates from a real Pebble over HTTP-01, handed to every TLS listener, renewed
with connections open; ACME off or unreachable leaves the self-signed certificate alone."""

from __future__ import annotations

import contextlib
import http.client
import imaplib
import poplib
import shutil
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, client_tls, running_server
from cryptography import x509
from peers.pebble import Pebble, free_port, names_on_loopback, needs_pebble, running_pebble
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import formatEvent, globalLogPublisher

from ourmail.config import ACMESettings
from ourmail.secure import acmerenewal
from ourmail.secure.certfiles import ACMEFiles, read_info, read_left_out

pytestmark = needs_pebble

HOST = "mail.example.test"
NAMES = (HOST, "autoconfig.example.test", "mta-sts.example.test")


def served_certificate(port: int) -> x509.Certificate:
    """The certificate an implicit-TLS listener on ``port`` shows a new connection."""
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_tls().wrap_socket(raw, server_hostname=HOST) as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def submissions_certificate(port: int) -> x509.Certificate:
    """The certificate the submissions listener shows, after a real SMTP greeting."""
    with smtplib.SMTP_SSL("127.0.0.1", port, context=client_tls()) as smtp:
        assert smtp.ehlo()[0] == 250
        der = smtp.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def imap_certificate(m: imaplib.IMAP4) -> x509.Certificate:
    return x509.load_der_x509_certificate(m.sock.getpeercert(binary_form=True))


def starttls_serials(srv: RunningServer) -> set[int]:
    """The serials SMTP (MX and submission), IMAP and POP3 STARTTLS, POP3S and the web
    listener show new connections."""
    serials = set()
    for service in ("smtp", "submission"):
        with smtplib.SMTP("127.0.0.1", srv.port(service)) as smtp:
            smtp.starttls(context=client_tls())
            serials.add(x509.load_der_x509_certificate(smtp.sock.getpeercert(True)).serial_number)
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.starttls(ssl_context=client_tls())
    serials.add(imap_certificate(m).serial_number)
    m.logout()
    p = poplib.POP3("127.0.0.1", srv.port("pop3"))
    p.stls(context=client_tls())
    serials.add(x509.load_der_x509_certificate(p.sock.getpeercert(True)).serial_number)
    p.quit()
    for service in ("pop3s", "web"):
        serials.add(served_certificate(srv.port(service)).serial_number)
    return serials


@pytest.fixture
def names_resolve() -> Iterator[int]:
    """The tests' DNS server answering 127.0.0.1 for every name of the certificate; its port."""
    with names_on_loopback(NAMES) as port:
        yield port


@contextlib.contextmanager
def acme_server(
    tmp_path: Path, directory: str, ca_file: Path, http_port: int, **changes: Any
) -> Iterator[Any]:
    acme = ACMESettings(
        enabled=True, directory=directory, email="postmaster@example.test", ca_file=str(ca_file)
    )
    listen = {"http": f"tcp:{http_port}:interface=127.0.0.1"}
    with running_server(tmp_path, listen=listen, hostname=HOST, acme=acme, **changes) as srv:
        yield srv


def renew(srv: RunningServer, force: bool = False) -> bool:
    assert srv.server.acme is not None
    return bool(blockingCallFromThread(reactor, srv.server.acme.renew, force))


@pytest.fixture
def pebble_and_server(tmp_path: Path, names_resolve: int) -> Iterator[tuple[Pebble, Any]]:
    http_port = free_port()
    with (
        running_pebble(tmp_path / "pebble", http_port, names_resolve) as pebble,
        acme_server(tmp_path, pebble.directory, pebble.ca_file, http_port) as srv,
    ):
        yield pebble, srv


def test_a_certificate_from_pebble_serves_imaps_and_submissions_and_renews_with_connections_open(
    pebble_and_server: tuple[Pebble, RunningServer],
) -> None:
    pebble, srv = pebble_and_server
    renew(srv)  # waits for the order the start began (or makes it)
    intermediate = x509.load_pem_x509_certificates(pebble.intermediate_pem())[0]
    files = ACMEFiles.of(srv.data)
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert files.account_key.stat().st_mode & 0o777 == 0o600

    first = served_certificate(srv.port("imaps"))
    assert first.issuer == intermediate.subject
    # A client that trusts only Pebble's root verifies the chain and the name, as a mail
    # client trusting Let's Encrypt would.
    verifying = ssl.create_default_context(cadata=pebble.root_pem().decode())
    for service in ("imaps", "submissions", "web"):
        with (
            socket.create_connection(("127.0.0.1", srv.port(service))) as raw,
            verifying.wrap_socket(raw, server_hostname="mta-sts.example.test") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert srv.server.web is not None  # Apple profiles are signed with it
    assert srv.server.web.services.certificate == (files.certificate, files.key)
    san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == set(NAMES)
    assert submissions_certificate(srv.port("submissions")).serial_number == first.serial_number
    assert starttls_serials(srv) == {first.serial_number}

    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
    try:
        m.login(srv.user, srv.password)
        m.select("INBOX")
        assert imap_certificate(m).serial_number == first.serial_number

        assert renew(srv, force=True) is True

        second = served_certificate(srv.port("imaps"))
        assert second.serial_number != first.serial_number
        assert second.issuer == intermediate.subject
        assert submissions_certificate(srv.port("submissions")).serial_number == (
            second.serial_number
        )
        assert starttls_serials(srv) == {second.serial_number}
        # The connection opened before keeps its session and its certificate.
        assert m.noop()[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
        assert imap_certificate(m).serial_number == first.serial_number
    finally:
        m.logout()
    info = read_info(files.certificate)
    assert info is not None and info.serial == second.serial_number
    assert renew(srv) is False  # fresh and for the right names: nothing to do


def test_the_http_listener_answers_only_known_challenges_and_still_redirects(
    pebble_and_server: tuple[Pebble, RunningServer],
) -> None:
    _, srv = pebble_and_server
    conn = http.client.HTTPConnection("127.0.0.1", srv.port("http"))
    conn.request("GET", "/.well-known/acme-challenge/unknown-token")
    answer = conn.getresponse()
    assert answer.status == 404
    answer.read()
    conn.request("GET", "/.well-known/acme-challenge/../../etc/passwd")
    answer = conn.getresponse()
    assert answer.status in (301, 404)
    answer.read()
    conn.request("GET", "/inbox")
    answer = conn.getresponse()
    assert answer.status == 301
    assert answer.getheader("Location", "").startswith("https://")
    conn.close()


def test_with_acme_off_the_self_signed_certificate_stays(tmp_path: Path) -> None:
    with running_server(tmp_path, hostname=HOST) as srv:
        assert srv.server.acme is None
        cert = served_certificate(srv.port("imaps"))
        assert cert.issuer == cert.subject  # self-signed
        assert not ACMEFiles.of(srv.data).folder.exists()
        conn = http.client.HTTPConnection("127.0.0.1", srv.port("http"))
        conn.request("GET", "/.well-known/acme-challenge/some-token")
        answer = conn.getresponse()
        assert answer.status == 301  # the plain redirect, no challenges served
        conn.close()


def test_an_unreachable_ca_leaves_the_self_signed_certificate_and_logs_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acmerenewal, "RETRY_FIRST", 0.1)  # the backoff, in tenths of seconds
    errors: list[dict[str, Any]] = []
    logged = threading.Event()

    directory = f"https://127.0.0.1:{free_port()}/dir"  # nothing listens there

    def observe(event: dict[str, Any]) -> None:
        if "ACME certificate not obtained" in str(event.get("log_format", "")) and (
            event.get("ca") == directory
        ):
            errors.append(event)
            if len(errors) == 3:
                logged.set()

    globalLogPublisher.addObserver(observe)
    try:
        acme = ACMESettings(enabled=True, directory=directory)
        with running_server(tmp_path, hostname=HOST, acme=acme) as srv:
            assert srv.server.acme is not None
            assert logged.wait(60), "the failed orders were not logged"
            assert [e["delay"] for e in errors[:3]] == [0.1, 0.2, 0.4]
            cert = served_certificate(srv.port("imaps"))
            assert cert.issuer == cert.subject
            assert submissions_certificate(srv.port("submissions")).issuer == cert.subject
            with pytest.raises(Exception, match="onnection refused"):
                renew(srv, force=True)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert "onnection refused" in errors[0]["why"]


def test_a_restart_serves_the_stored_certificate_without_a_new_order(
    tmp_path: Path, names_resolve: int
) -> None:
    http_port = free_port()
    with running_pebble(tmp_path / "pebble", http_port, names_resolve) as pebble:
        with acme_server(tmp_path, pebble.directory, pebble.ca_file, http_port) as srv:
            renew(srv)
            serial = served_certificate(srv.port("imaps")).serial_number
        # The same data folder's ACME files (its accounts would clash with the test user).
        again = tmp_path / "again"
        shutil.copytree(ACMEFiles.of(srv.data).folder, ACMEFiles.of(again / "data").folder)
        with acme_server(again, pebble.directory, pebble.ca_file, http_port) as srv:
            assert served_certificate(srv.port("imaps")).serial_number == serial
            assert renew(srv) is False
            assert served_certificate(srv.port("submissions")).serial_number == serial


def test_a_renewal_asked_for_by_the_cli_is_made_at_the_next_hangup(
    pebble_and_server: tuple[Pebble, RunningServer],
) -> None:
    _, srv = pebble_and_server
    renew(srv)
    before = served_certificate(srv.port("imaps")).serial_number
    files = ACMEFiles.of(srv.data)
    assert srv.server.acme is not None
    assert blockingCallFromThread(reactor, srv.server.acme.asked) is False  # nothing asked
    files.request_renewal()
    assert blockingCallFromThread(reactor, srv.server.acme.asked) is True
    assert not files.renew_request.exists()
    assert served_certificate(srv.port("imaps")).serial_number != before


def test_mx_worker_processes_get_the_renewed_certificate(
    tmp_path: Path, names_resolve: int
) -> None:
    http_port = free_port()
    logged: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        logged.append(formatEvent(event) or "")

    def wait_logged(text: str) -> None:
        for _ in range(600):
            if any(text in line for line in logged):
                return
            time.sleep(0.05)
        raise AssertionError(f"not logged: {text}: {logged[-30:]}")

    globalLogPublisher.addObserver(observe)
    try:
        with running_pebble(tmp_path / "pebble", http_port, names_resolve) as pebble:
            # The worker process reads [acme] from the configuration file, as in production.
            (tmp_path / "data").mkdir()
            (tmp_path / "data" / "ourmail.toml").write_text(
                f'[acme]\nenabled = true\ndirectory = "{pebble.directory}"\n'
                f'ca_file = "{pebble.ca_file}"\n'
            )
            with acme_server(
                tmp_path, pebble.directory, pebble.ca_file, http_port, mx_processes=2
            ) as srv:
                renew(srv)
                wait_logged("mx worker 1: accepting mail")
                del logged[:]
                assert renew(srv, force=True) is True
                new = served_certificate(srv.port("imaps")).serial_number
                wait_logged("mx worker 1: TLS certificate now from")
                assert not any("mx worker 1 ended" in line for line in logged)
                for _ in range(10):  # whichever process takes the connection
                    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as smtp:
                        smtp.starttls(context=client_tls())
                        der = smtp.sock.getpeercert(True)
                        assert x509.load_der_x509_certificate(der).serial_number == new
    finally:
        globalLogPublisher.removeObserver(observe)


def test_an_autoconfig_name_that_does_not_resolve_is_left_off_the_certificate(
    tmp_path: Path,
) -> None:
    """The test DNS answers NXDOMAIN for autoconfig.example.test: the host name still gets a
    certificate, without that name, and a check the day after orders nothing."""
    http_port = free_port()
    with (
        names_on_loopback((HOST, "mta-sts.example.test")) as dns_port,
        running_pebble(tmp_path / "pebble", http_port, dns_port) as pebble,
        acme_server(tmp_path, pebble.directory, pebble.ca_file, http_port) as srv,
    ):
        renew(srv)
        cert = served_certificate(srv.port("imaps"))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [HOST, "mta-sts.example.test"]
        assert cert.issuer != cert.subject
        files = ACMEFiles.of(srv.data)
        assert set(read_left_out(files.left_out)) == {"autoconfig.example.test"}
        assert renew(srv) is False
