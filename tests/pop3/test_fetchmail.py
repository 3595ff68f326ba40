"""fetchmail (Debian) against ourmail: over STLS and over implicit TLS, once keeping the mail
on the server and once deleting it; a second run fetches nothing new."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import RunningServer
from pop3help import deliver

pytestmark = pytest.mark.skipif(
    shutil.which("fetchmail") is None, reason="fetchmail is installed by scripts/test"
)


def fetchmail(srv: RunningServer, work: Path, implicit_tls: bool, keep: bool) -> tuple[int, str]:
    """One fetchmail run; its exit status (0: mail fetched, 1: none) and output."""
    work.mkdir(exist_ok=True)
    rc = work / "fetchmailrc"
    service = "pop3s" if implicit_tls else "pop3"
    rc.write_text(
        f"set no bouncemail\n"
        f"poll 127.0.0.1 service {srv.port(service)} protocol pop3 uidl\n"
        f'  user "{srv.user}" there with password "{srv.password}" is "tester" here\n'
        f"  {'ssl' if implicit_tls else ''} sslproto 'TLS1.2+' no sslcertck\n"
        f"  {'keep' if keep else 'nokeep'}\n"
        f'  mda "cat >> {work / "mbox"}"\n'
    )
    rc.chmod(0o600)
    run = subprocess.run(
        ["fetchmail", "-f", str(rc), "-i", str(work / "ids"), "--nosyslog", "-v"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(work), "PATH": "/usr/bin:/bin", "FETCHMAILHOME": str(work)},
        stdin=subprocess.DEVNULL,
    )
    return run.returncode, run.stdout + run.stderr


def _count(work: Path) -> int:
    mbox = work / "mbox"
    return mbox.read_bytes().count(b"Subject: pop ") if mbox.exists() else 0


def test_stls_and_keep(mailserver: RunningServer, tmp_path: Path) -> None:
    deliver(mailserver, 3)
    work = tmp_path / "keep"
    status, out = fetchmail(mailserver, work, implicit_tls=False, keep=True)
    assert status == 0, out
    assert "STLS" in out and _count(work) == 3
    status, out = fetchmail(mailserver, work, implicit_tls=False, keep=True)
    assert status == 1, out  # nothing new
    assert _count(work) == 3


def test_implicit_tls_and_delete(mailserver: RunningServer, tmp_path: Path) -> None:
    deliver(mailserver, 3)
    work = tmp_path / "nokeep"
    status, out = fetchmail(mailserver, work, implicit_tls=True, keep=False)
    assert status == 0, out
    assert _count(work) == 3
    status, out = fetchmail(mailserver, tmp_path / "other", implicit_tls=True, keep=False)
    assert status == 1, out  # deleted for POP3 (hidden by the default policy)
    assert _count(work) == 3
