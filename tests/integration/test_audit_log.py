"""The ``ourmail user`` and ``ourmail alias`` commands write the audit log the admin console
writes (docs/admin-console.md#the-audit-log): one JSON line per change or refusal, with the
Unix user, never a password."""

from __future__ import annotations

import io
import json
import os
import pwd
import sys
from pathlib import Path

from ourmail.admin.cli import main


def run(data: Path, *args: str, stdin: str = "") -> int:
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return main(["--data", str(data), *args])
    finally:
        sys.stdin = old


def test_command_changes_are_audited(tmp_path: Path, monkeypatch: object) -> None:
    os.environ.pop("SUDO_USER", None)
    (tmp_path / "ourmail.toml").write_text('domains = ["a.test"]\n')
    secret = "a long secret password"
    assert run(tmp_path, "user", "add", "Bob@A.test", "--password-stdin", stdin=secret + "\n") == 0
    assert run(tmp_path, "user", "add", "bob@a.test", "--password-stdin", stdin=secret + "\n") == 1
    assert run(tmp_path, "user", "passwd", "bob@a.test", "--password-stdin", stdin="tiny7\n") == 1
    assert (
        run(tmp_path, "user", "passwd", "bob@a.test", "--password-stdin", stdin=secret + "\n") == 0
    )
    assert run(tmp_path, "user", "quota", "bob@a.test", "--bytes", "10M") == 0
    assert run(tmp_path, "user", "quota", "bob@a.test") == 0  # only shown: no line
    assert run(tmp_path, "alias", "add", "all@a.test", "bob@a.test") == 0
    assert run(tmp_path, "alias", "del", "all@a.test") == 0
    assert run(tmp_path, "user", "pop3-delete", "bob@a.test", "trash") == 0
    assert run(tmp_path, "user", "del", "bob@a.test") == 0
    assert run(tmp_path, "user", "del", "x@elsewhere.test") == 1
    assert run(tmp_path, "domain", "add", "B.test") == 0
    assert run(tmp_path, "domain", "add", "b.test") == 1
    assert run(tmp_path, "user", "pop3-delete", "postmaster@a.test", "trash") == 1
    log = tmp_path / "log" / "audit.log"
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["action"], e["target"], e["result"]) for e in lines] == [
        ("user.add", "bob@a.test", "ok"),
        ("user.add", "bob@a.test", "refused: exists"),
        ("user.passwd", "bob@a.test", "refused: short-password"),
        ("user.passwd", "bob@a.test", "ok"),
        ("user.quota", "bob@a.test", "ok"),  # detail: bytes=10485760 messages=0
        ("alias.add", "all@a.test", "ok"),
        ("alias.del", "all@a.test", "ok"),
        ("user.pop3-delete", "bob@a.test", "ok"),
        ("user.del", "bob@a.test", "ok"),
        ("user.del", "elsewhere.test", "refused: not-served"),
        ("domain.add", "b.test", "ok"),
        ("domain.add", "b.test", "refused: exists"),
    ]
    assert lines[4]["detail"] == "bytes=10485760 messages=0"
    assert lines[5]["detail"] == "bob@a.test"
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert {(e["who"], e["via"], e["client"]) for e in lines} == {(me, "cli", "")}
    assert secret not in log.read_text() and "tiny7" not in log.read_text()
