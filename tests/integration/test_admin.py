"""The admin commands, and their effect on a running server."""

import imaplib
import io
import sys
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls

from ourmail.admin.cli import main


def run(data: Path, *args: str, stdin: str = "") -> int:
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return main(["--data", str(data), *args])
    finally:
        sys.stdin = old


def test_user_and_domain_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ourmail.toml").write_text('domains = ["a.test"]\n')
    assert (
        run(tmp_path, "user", "add", "Bob@A.test", "--password-stdin", stdin="long enough pw\n")
        == 0
    )
    assert (
        run(tmp_path, "user", "add", "bob@a.test", "--password-stdin", stdin="long enough pw\n")
        == 1
    )
    assert (
        run(tmp_path, "user", "add", "x@b.test", "--password-stdin", stdin="long enough pw\n") == 1
    )
    assert "not a domain served here" in capsys.readouterr().err
    assert run(tmp_path, "domain", "add", "B.test") == 0
    assert run(tmp_path, "domain", "add", "b.test") == 1
    assert (
        run(tmp_path, "user", "add", "x@b.test", "--password-stdin", stdin="long enough pw\n") == 0
    )
    assert run(tmp_path, "user", "passwd", "x@b.test", "--password-stdin", stdin="short\n") == 1
    assert (
        run(tmp_path, "user", "passwd", "x@b.test", "--password-stdin", stdin="another long one\n")
        == 0
    )
    capsys.readouterr()
    assert run(tmp_path, "user", "list") == 0
    assert capsys.readouterr().out.split() == ["bob@a.test", "x@b.test"]
    assert run(tmp_path, "domain", "list") == 0
    assert capsys.readouterr().out.split() == [
        "a.test",
        "(configuration,",
        "primary)",
        "b.test",
        "(added)",
    ]
    assert run(tmp_path, "user", "del", "x@b.test") == 0
    assert run(tmp_path, "user", "del", "x@b.test") == 1
    assert "argon2id" in (tmp_path / "accounts.json").read_text()
    assert oct((tmp_path / "accounts.json").stat().st_mode & 0o777) == "0o600"


def test_changes_apply_to_a_running_server(mailserver: RunningServer) -> None:
    address = f"carol@{mailserver.domain}"
    assert (
        run(mailserver.data, "user", "add", address, "--password-stdin", stdin="carol's password\n")
        == 0
    )
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    assert m.login(address, "carol's password")[0] == "OK"
    m.logout()
    assert (
        run(
            mailserver.data, "user", "passwd", address, "--password-stdin", stdin="a new password\n"
        )
        == 0
    )
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    with pytest.raises(imaplib.IMAP4.error):
        m.login(address, "carol's password")
    assert m.login(address, "a new password")[0] == "OK"
    m.logout()


def test_module_entry_point() -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "ourmail", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "user" in out.stdout and "domain" in out.stdout
