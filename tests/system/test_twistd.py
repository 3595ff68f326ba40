"""The whole server as an admin runs it: `twistd -n ourmail` on a fresh data directory."""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import client_tls
from cryptography import x509
from twistdhelp import REPO, SERVICES, Twistd

pytestmark = pytest.mark.system

MSG = (
    b"From: Bob <bob@else.test>\r\nTo: alice@example.test\r\nSubject: system test\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus dem Systemtest.\r\n.a line with a leading dot\r\n\r\n\ttabbed\r\n"
)


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "ourmail-data"


def twistd(*args: str, path: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``twistd -n ourmail ARGS`` to completion (for start-up failures); ``path`` goes
    before the repository on PYTHONPATH."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("twistd")), "-n", "--pidfile=", "ourmail", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [path, str(REPO)]))},
        timeout=60,
        check=False,
    )


def admin(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ourmail", *args, "--data", str(data)],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )


def test_first_start_send_read_restart(data: Path) -> None:
    server = Twistd(data)
    try:
        # First start: config, certificate with the host name, postmaster with a one-time password.
        assert 'domains = ["example.test"]' in (data / "ourmail.toml").read_text()
        cert = x509.load_pem_x509_certificate((data / "tls" / "cert.pem").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["mail.example.test"]
        created = next(line for line in server.log if "created the account postmaster@" in line)
        postmaster_pw = re.search(r"one-time password (\S+)", created).group(1)

        added = admin(
            data, "user", "add", "alice@example.test", "--password-stdin", stdin="alice's pw 123\n"
        )
        assert added.returncode == 0, added.stderr

        with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
            s.starttls(context=client_tls())
            assert s.sendmail("bob@else.test", ["alice@example.test"], MSG) == {}

        m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
        m.starttls(ssl_context=client_tls())
        m.login("alice@example.test", "alice's pw 123")
        m.select("INBOX")
        _, fetched = m.uid("FETCH", "1", "(BODY.PEEK[])")
        body = fetched[0][1]
        assert body.startswith(b"Received: from ") and body.endswith(MSG)
        validity = m.response("UIDVALIDITY")
        m.logout()

        p = poplib.POP3("127.0.0.1", server.ports["pop3"])
        p.stls(context=client_tls())
        p.user("alice@example.test")
        p.pass_("alice's pw 123")
        _, lines, _ = p.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == body.replace(b"\r\n..", b"\r\n.")
        p.quit()
    finally:
        server.stop()
    # twistd re-raises SIGTERM after a clean shutdown, so the exit status is -15.
    assert any("Main loop terminated" in line for line in server.log), "\n".join(server.log)
    assert not any("Traceback" in line for line in server.log), "\n".join(server.log)

    # Restart on the same data: the message, its UID and the accounts are all still there.
    server = Twistd(data)
    try:
        assert not any("created the account" in line for line in server.log)
        m = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=client_tls())
        m.login("alice@example.test", "alice's pw 123")
        m.select("INBOX")
        assert m.response("UIDVALIDITY") == validity
        _, fetched = m.uid("FETCH", "1", "(BODY.PEEK[])")
        assert fetched[0][1] == body
        m.logout()
        m = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=client_tls())
        assert m.login("postmaster", postmaster_pw)[0] == "OK"
        m.logout()
    finally:
        server.stop()


def test_bad_config_stops_start_with_a_clear_message(data: Path) -> None:
    data.mkdir()
    (data / "ourmail.toml").write_text("[limits]\nmax_message_size = 'big'\n")
    proc = twistd("--data", str(data))
    assert proc.returncode != 0
    assert "configuration error" in proc.stdout + proc.stderr
    assert "limits.max_message_size" in proc.stdout + proc.stderr


def test_port_in_use_is_reported(data: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        start = time.monotonic()
        proc = twistd(
            "--data",
            str(data),
            f"--listen=smtp=tcp:{port}:interface=127.0.0.1",
            *[f"--listen={s}=none" for s in SERVICES if s != "smtp"],
        )
    assert proc.returncode != 0 and time.monotonic() - start < 60
    assert f"smtp cannot listen on tcp:{port}" in proc.stdout + proc.stderr
    assert "already in use" in proc.stderr
    assert_one_line(proc)


def assert_one_line(proc: subprocess.CompletedProcess[str]) -> None:
    """A start-up refusal: exit status 1 and one line, no traceback."""
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len((proc.stdout + proc.stderr).strip().splitlines()) == 1, proc.stdout + proc.stderr


def test_a_missing_ldap_module_stops_start(data: Path, tmp_path: Path) -> None:
    """The issue-13 newcomer's case: [ldap] url set, ldaptor missing.  Before, the server
    started and answered every login with NO [SERVERBUG]."""
    broken = tmp_path / "broken"
    (broken / "ldaptor").mkdir(parents=True)
    (broken / "ldaptor" / "__init__.py").write_text("raise ImportError('ldaptor is broken')\n")
    data.mkdir()
    (data / "ourmail.toml").write_text('[ldap]\nurl = "ldap://127.0.0.1:1/dc=example,dc=test"\n')
    proc = twistd("--data", str(data), path=str(broken))
    assert "LDAP needs the Python package 'ldaptor'" in proc.stderr
    assert_one_line(proc)


@pytest.mark.parametrize("where", ["config", "auth"])
def test_an_unreadable_ldap_password_file_stops_start(data: Path, where: str) -> None:
    url = "ldap://127.0.0.1:1/dc=example,dc=test?bind=cn=mail&password_file=/nonexistent/pw"
    data.mkdir()
    if where == "config":
        (data / "ourmail.toml").write_text(f'[ldap]\nurl = "{url}"\n')
        proc = twistd("--data", str(data))
    else:
        proc = twistd("--auth", f"ldap:{url}", "--data", str(data))
    assert "cannot read the LDAP password file" in proc.stderr
    assert_one_line(proc)


def test_an_lmtp_socket_that_cannot_be_made_stops_start(data: Path) -> None:
    proc = twistd("--data", str(data), "--listen=lmtp=unix:/nonexistent/ourmail/lmtp.sock")
    assert "lmtp cannot listen on unix:/nonexistent/ourmail/lmtp.sock" in proc.stderr
    assert_one_line(proc)


@pytest.mark.parametrize(
    ("cert", "message"),
    [
        ("/nonexistent/fullchain.pem", "does not exist"),
        ("garbage.pem", "cannot load the TLS certificate"),
    ],
)
def test_configured_certificate_must_exist_and_load(data: Path, cert: str, message: str) -> None:
    data.mkdir()
    (data / "garbage.pem").write_text("not a certificate")
    path = cert if cert.startswith("/") else str(data / cert)
    (data / "ourmail.toml").write_text(f'[tls]\ncertificate = "{path}"\nkey = "{path}"\n')
    proc = twistd("--data", str(data))
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert_one_line(proc)
    assert not Path("/nonexistent").exists()
