"""mbsync (Debian isync) syncs a 1,000-message account both ways; a second run finds nothing."""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest
from conftest import RunningServer
from imaphelp import Session

MESSAGES = 1000


def mbsync(config: Path) -> list[str]:
    """Run ``mbsync -a`` with network debugging; the IMAP commands it sent."""
    if shutil.which("mbsync") is None:
        pytest.fail("mbsync is not installed: run scripts/test, which installs isync")
    out = subprocess.run(
        ["mbsync", "-Dn", "-c", str(config), "-a"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return re.findall(r">>> \d+ (.*)", out.stdout + out.stderr)


def work(commands: list[str]) -> list[str]:
    """The commands that transfer or change something (not SELECT, LIST, flag listings)."""
    verbs = ("APPEND", "UID STORE", "STORE", "EXPUNGE", "UID EXPUNGE", "UID MOVE", "CREATE")
    return [c for c in commands if c.startswith(verbs) or "BODY.PEEK[]" in c]


def write_config(tmp_path: Path, srv: RunningServer) -> tuple[Path, Path]:
    local = tmp_path / "local"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount ourmail
Host 127.0.0.1
Port {srv.port("imaps")}
User {srv.user}
Pass "{srv.password}"
SSLType IMAPS
SSLVersions TLSv1.2 TLSv1.3
CertificateFile {srv.data / "tls" / "cert.pem"}

IMAPStore remote
Account ourmail

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""
    )
    return config, local


def local_files(folder: Path) -> list[Path]:
    return sorted([*(folder / "cur").iterdir(), *(folder / "new").iterdir()])


def test_mbsync_both_ways(tmp_path: Path, mailserver: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        for n in range(MESSAGES):
            msg = f"Subject: message {n}\r\nMessage-ID: <s{n}@else.test>\r\n\r\nbody {n}\r\n"
            s.sendmail("bob@else.test", [mailserver.user], msg.encode())
    config, local = write_config(tmp_path, mailserver)

    first = mbsync(config)  # everything comes down
    assert sum("BODY.PEEK[]" in c for c in first) == MESSAGES
    assert len(local_files(local / "INBOX")) == MESSAGES
    assert (local / "Sent").is_dir() and (local / "Trash").is_dir()
    assert work(mbsync(config)) == []  # a second run finds nothing to do

    # Local changes go up: a flag, a deletion, a move to Archive.
    files = local_files(local / "INBOX")
    seen = files[0]
    seen.rename(seen.parent.parent / "cur" / (seen.name.split(":2,")[0] + ":2,S"))
    files[1].unlink()
    moved = files[2]
    moved_subject = next(x for x in moved.read_bytes().splitlines() if x.startswith(b"Subject:"))
    moved.rename(local / "Archive" / "cur" / moved.name.split(",U=")[0])
    # Server changes come down: new mail and a flag set by another client.
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        s.sendmail("bob@else.test", [mailserver.user], b"Subject: late\r\n\r\nlate\r\n")
    other = Session(mailserver)
    other.ok("SELECT INBOX")
    other.ok(f"STORE {MESSAGES} +FLAGS.SILENT (\\Flagged)")
    other.close()

    changes = work(mbsync(config))
    assert sum("BODY.PEEK[]" in c for c in changes) == 1  # the late message
    assert sum(c.startswith("APPEND") for c in changes) == 1  # the moved one, into Archive
    assert any("\\Seen" in c for c in changes) and any("\\Deleted" in c for c in changes)
    assert work(mbsync(config)) == []

    imap = Session(mailserver)
    lines = imap.ok("SELECT INBOX")
    assert f"* {MESSAGES - 1} EXISTS".encode() in lines  # 1000 - deleted - moved + late
    seen_line = imap.ok("UID SEARCH SEEN")[0]
    assert len(seen_line.split()) == 3  # exactly one message
    assert b"* 1 EXISTS" in imap.ok("SELECT Archive")
    archived = b"".join(imap.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert moved_subject in archived
    imap.close()
    flagged = [p for p in local_files(local / "INBOX") if "F" in p.name.rsplit(":2,", 1)[-1]]
    assert len(flagged) == 1
