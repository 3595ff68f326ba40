"""A real SMTP client: swaks (Debian package, installed by scripts/test)."""

import shutil
import subprocess

import pytest
from conftest import RunningServer

from ourmail.store.userstore import MaildirStore


def swaks(*args: str, sender: str = "bob@else.test") -> subprocess.CompletedProcess[str]:
    if shutil.which("swaks") is None:
        pytest.fail("swaks is not installed: run scripts/test, which installs it")
    return subprocess.run(
        ["swaks", "--helo", "client.test", "--from", sender, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def inbox_count(srv: RunningServer) -> int:
    folder = MaildirStore(srv.data).user(srv.user).folder("INBOX")
    folder.sync()
    return len(folder.uids())


def test_mx_with_starttls_and_pipelining(mailserver: RunningServer) -> None:
    out = swaks(
        "--to",
        mailserver.user,
        "--server",
        f"127.0.0.1:{mailserver.port('smtp')}",
        "--tls",
        "--pipeline",
        "--header",
        "Subject: from swaks",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "<** " not in out.stdout
    assert inbox_count(mailserver) == 1


def test_mx_refuses_relay(mailserver: RunningServer) -> None:
    out = swaks("--to", "carol@remote.test", "--server", f"127.0.0.1:{mailserver.port('smtp')}")
    assert out.returncode != 0
    assert "554 5.7.1" in out.stdout


def submit(
    srv: RunningServer, service: str, tls: str, mechanism: str
) -> subprocess.CompletedProcess[str]:
    """Send as the test user through a submission port with swaks' own TLS and AUTH."""
    return swaks(
        "--to", srv.user, "--server", f"127.0.0.1:{srv.port(service)}", tls,
        "--auth", mechanism, "--auth-user", srv.user, "--auth-password", srv.password,
        sender=srv.user,
    )  # fmt: skip


def test_submission_auth_plain_over_starttls(mailserver: RunningServer) -> None:
    out = submit(mailserver, "submission", "--tls", "PLAIN")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "235 2.7.0" in out.stdout


def test_submissions_auth_login_implicit_tls(mailserver: RunningServer) -> None:
    out = submit(mailserver, "submissions", "--tls-on-connect", "LOGIN")
    assert out.returncode == 0, out.stdout + out.stderr
    assert inbox_count(mailserver) == 1


def test_submission_without_auth_is_refused(mailserver: RunningServer) -> None:
    out = swaks(
        "--to", mailserver.user, "--server", f"127.0.0.1:{mailserver.port('submission')}", "--tls"
    )
    assert out.returncode != 0
    assert "530 5.7.0" in out.stdout
