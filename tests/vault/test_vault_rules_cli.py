"""``ourmail vault rule|hold|holds|expire|restore``: validation, the audit trail, and a restore
into a running server's mailbox that IMAP sees at once."""

from __future__ import annotations

import imaplib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls, running_server
from pop3help import deliver, pop
from vaultrulehelp import Vault

from ourmail.admin import cli
from ourmail.config import Pop3Settings
from ourmail.vault.restore import RestoreRefused, read_messages

REPO = Path(__file__).resolve().parents[2]
DAY = 86400.0


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ourmail", *args], capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO)}, timeout=120, check=False)  # fmt: skip


def audit_lines(data: Path) -> list[tuple[str, str]]:
    lines = (data / "log" / "audit.log").read_text().splitlines()
    return [(e["action"], e["result"]) for e in map(json.loads, lines)]


def test_rules_and_holds_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "ourmail.toml").write_text('domains = ["org.test"]\nhostname = "mx.org.test"\n')
    vault = Vault(data / "vault")
    old = vault.capture(time.time() - 40 * DAY, "x@else.test", "bob@org.test", "a", b"one\r\n")

    def ourmail(*args: str) -> tuple[int, str]:
        code = cli.main(["--data", str(data), "vault", *args])
        out = capsys.readouterr()
        return code, out.out + out.err

    assert ourmail("rule", "set", "--domain", "Org.Test", "--keep-days", "30")[0] == 0
    assert ourmail("rule", "set", "--user", "carol@org.test", "--keep-years", "7")[0] == 0
    code, out = ourmail("rule", "list")
    assert "default\tforever" in out and "domain:org.test\t30 days" in out
    assert "user:carol@org.test\t2557 days" in out
    assert ourmail("rule", "set", "--domain", "not a domain", "--forever") == (
        1,
        "ourmail: not a domain name: 'not a domain'\n",
    )
    assert ourmail("hold", "add", "case-7", "--to", "@org.test", "--reason", " ")[0] == 1
    code, out = ourmail("hold", "add", "case-7", "--to", "bob@org.test", "--subject", "a",
                        "--reason", "FOI request 7")  # fmt: skip
    assert code == 0, out
    code, out = ourmail("hold", "add", "case-8", "--query-json", '{"words": 7}',
                        "--reason", "r")  # fmt: skip
    assert code == 1 and "must be text" in out
    code, out = ourmail("holds")
    assert "case-7\tquery" in out and "reason: FOI request 7" in out and "1 active hold" in out
    code, out = ourmail("expire", "--dry-run")
    assert "would expire 0 messages" in out and "kept by hold case-7: 1" in out
    assert ourmail("expire", "--now", "2999-01-01")[0] == 1  # only a dry run looks ahead
    assert ourmail("hold", "release", "case-7", "--reason", "answered")[0] == 0
    code, out = ourmail("expire")
    assert code == 0 and "expired 1 messages and 1 bodies" in out
    assert not vault.contents()[old]
    assert ourmail("hold", "release", "case-7", "--reason", "again")[0] == 1
    assert audit_lines(data) == [
        ("vault.rule", "ok"),
        ("vault.rule", "ok"),
        ("vault.rule", "refused"),
        ("vault.hold", "refused"),
        ("vault.hold", "ok"),
        ("vault.hold", "refused"),
        ("vault.release", "ok"),
        ("vault.expire", "ok"),
        ("vault.release", "refused"),
    ]
    kinds = [r.fields["kind"] for _, r in vault.log.records()]
    assert kinds == ["blob", "capture", "rule", "rule", "hold", "release", "expire"]


def test_restore_into_a_running_server_and_expunge_leaves_the_vault(
    mailserver: RunningServer,
) -> None:
    data = mailserver.data
    vault = Vault(data / "vault", (mailserver.domain,))
    now = time.time()
    kept = vault.capture(now, "x@else.test", mailserver.user, "kept", b"Hello again\r\n")
    gone = vault.capture(now - 40 * DAY, "y@else.test", "bob@example.test", "gone", b"old\r\n")
    vault.rule(now, "user:bob@example.test", 30)
    vault.expire(now)
    data_kept = {s: r for _, r in vault.log.records() for s in [r.seq]}[kept]

    out = run("--data", str(data), "vault", "restore", str(kept), "--to", mailserver.user)
    assert out.returncode == 0, out.stderr
    assert f"restored record {kept} to {mailserver.user} INBOX as UID 1" in out.stdout
    with pytest.raises(RestoreRefused, match="retention removed this message's content"):
        read_messages(vault.log, [gone])

    m = imaplib.IMAP4("127.0.0.1", mailserver.port("imap"))
    m.starttls(client_tls())
    m.login(mailserver.user, mailserver.password)
    m.select("INBOX")
    fetched = m.fetch("1", "(BODY.PEEK[])")[1][0]
    assert isinstance(fetched, tuple)
    assert fetched[1] == data_kept.plain() + b"Hello again\r\n"
    audits = [r.fields for _, r in vault.log.records() if r.fields["kind"] == "audit"]
    assert [(a["action"], a["query"], a["count"]) for a in audits] == [("restore", str(kept), 1)]
    assert ("vault.restore", "ok") in audit_lines(data)

    before = [p.read_bytes() for _, p in vault.log.segments()]
    m.store("1", "+FLAGS", "\\Deleted")
    m.expunge()
    m.logout()
    assert [p.read_bytes() for _, p in vault.log.segments()] == before


def test_a_hold_counts_at_once_for_a_pop3_expunge(tmp_path: Path) -> None:
    """``ourmail vault hold add`` and then at once a POP3 DELE and QUIT under the expunge
    policy: the server's view of the holds catches up before it answers, so the message is
    kept (hidden from POP3), not erased."""
    with running_server(tmp_path, pop3=Pop3Settings(delete="expunge")) as srv:
        deliver(srv, 1)
        out = run("--data", str(srv.data), "vault", "hold", "add", "case-9", "--user", srv.user,
                  "--reason", "FOI request 9")  # fmt: skip
        assert out.returncode == 0, out.stderr
        p = pop(srv)
        p.dele(1)
        assert p.quit().startswith(b"+OK Bye (1 messages deleted)")
        m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
        m.login(srv.user, srv.password)
        assert m.select("INBOX")[1] == [b"1"]  # held: kept
        m.logout()
