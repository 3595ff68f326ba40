"""import maildir (from a real Dovecot) and export as Maildir or mbox."""

import imaplib
import mailbox
import re
import subprocess
import sys
from pathlib import Path

from conftest import RunningServer, client_tls
from peers.dovecot import dovecot

REPO = Path(__file__).resolve().parents[2]
MESSAGES = [
    (
        b"From: a@else.test\r\nSubject: one\r\n\r\nfirst\r\nFrom here on\r\n",
        "(\\Seen)",
        '"01-Feb-2020 10:00:00 +0000"',
    ),
    (
        b"From: b@else.test\r\nSubject: two\r\n\r\nsecond\r\n",
        "(\\Flagged $Later)",
        '"02-Mar-2021 11:30:00 +0100"',
    ),
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ourmail", *args], capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO)}, timeout=120, check=False)  # fmt: skip


def listing(m: imaplib.IMAP4, folder: str) -> list[tuple[bytes, bytes, bytes]]:
    m.select(folder)
    out = []
    for item in m.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")[1]:
        if isinstance(item, tuple):
            flags = b" ".join(sorted(re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).split()))
            date = re.search(rb'INTERNALDATE "([^"]*)"', item[0]).group(1)
            out.append((flags.replace(b"\\Recent", b"").strip(), date, item[1]))
    return out


def test_import_from_dovecot_then_export(mailserver: RunningServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    for sub in ("cur", "new", "tmp"):
        (empty / sub).mkdir(parents=True)
    with dovecot(empty, "alice", "secret") as (port, written):
        d = imaplib.IMAP4("127.0.0.1", port)
        d.login("alice", "secret")
        d.create("Work/&AMY-r&APg-")  # Work/Ærø
        for data, flags, date in MESSAGES:
            d.append("INBOX", flags, date, data)
            d.append("Work/&AMY-r&APg-", flags, date, data)
        d.logout()
        out = run(
            "--data",
            str(mailserver.data),
            "import",
            "maildir",
            str(written),
            "--user",
            mailserver.user,
        )
        assert out.returncode == 0, out.stderr
        assert "imported 4 messages" in out.stdout

    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    m.login(mailserver.user, mailserver.password)
    for folder in ("INBOX", "Work/&AMY-r&APg-"):
        got = listing(m, folder)
        assert [g[2] for g in got] == [msg for msg, _, _ in MESSAGES]
        assert got[0][0] == b"\\Seen" and got[1][0] == b"$Later \\Flagged"
        assert got[0][1] == b"01-Feb-2020 10:00:00 +0000"
        assert got[1][1] == b"02-Mar-2021 10:30:00 +0000"
    m.logout()

    out = run(
        "--data",
        str(mailserver.data),
        "export",
        "--user",
        mailserver.user,
        "--format",
        "mbox",
        str(tmp_path / "mbox"),
    )
    assert out.returncode == 0, out.stderr
    box = mailbox.mbox(tmp_path / "mbox" / "INBOX.mbox")
    msgs = list(box)
    assert [x["Subject"] for x in msgs] == ["one", "two"]
    assert msgs[0].get_flags() == "RO" and "F" in msgs[1].get_flags()
    assert msgs[1]["X-Keywords"] == "$Later"
    assert msgs[0].get_payload() == "first\n>From here on\n"  # mboxrd quoting
    assert (tmp_path / "mbox" / "Work" / "Ærø.mbox").exists()

    out = run(
        "--data", str(mailserver.data), "export", "--user", mailserver.user, str(tmp_path / "md")
    )
    assert out.returncode == 0, out.stderr
    md = mailbox.Maildir(tmp_path / "md", factory=None)
    assert sorted(x["Subject"] for x in md) == ["one", "two"]
    assert sorted(x.get_flags() for x in md) == ["Fa", "S"]  # a: the keyword $Later
    assert (tmp_path / "md" / "dovecot-keywords").read_text() == "0 $Later\n"
    assert "Work.&AMY-r&APg-" in [f for f in md.list_folders()]
    again = run(
        "--data", str(mailserver.data), "export", "--user", mailserver.user, str(tmp_path / "md")
    )
    assert again.returncode == 1 and "not empty" in again.stderr
