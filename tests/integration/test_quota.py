"""Quota: SMTP refuses deliveries to a full mailbox, IMAP refuses APPEND and COPY."""

import imaplib
import io
import smtplib
import sys
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls, running_server

from ourmail.admin.cli import main
from ourmail.config import FilterSettings, QuotaLimit, QuotaSettings, load_settings

MSG = b"Subject: q\r\n\r\n" + b"x" * 1000 + b"\r\n"


def send(srv: RunningServer, rcpt: str, size: int | None = None) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo()
        s.mail("bob@else.test", [f"SIZE={size}"] if size else [])
        code, text = s.rcpt(rcpt)
        if code == 250:
            s.data(MSG)
        return code, text


def test_smtp_over_quota_is_a_temporary_failure(tmp_path: Path) -> None:
    quota = QuotaSettings(default=QuotaLimit(bytes=2500, messages=None))
    # Sizes to the byte: without the filter chain's Authentication-Results header.
    with running_server(tmp_path, quota=quota, filters=FilterSettings(chain=())) as srv:
        assert send(srv, srv.user)[0] == 250
        code, text = send(srv, srv.user, size=5000)  # declared size would overrun
        assert (code, text[:5]) == (452, b"4.2.2")
        assert send(srv, srv.user)[0] == 250  # 1 KB more still fits… and now it is full
        assert send(srv, srv.user)[0] == 250
        code, text = send(srv, srv.user)
        assert (code, text[:5]) == (452, b"4.2.2")


def test_permanent_quota_and_per_domain_and_per_user_limits(tmp_path: Path) -> None:
    quota = QuotaSettings(
        default=QuotaLimit(messages=100),
        domains={"example.test": QuotaLimit(messages=1)},
        permanent=True,
    )
    with running_server(tmp_path, quota=quota) as srv:
        assert send(srv, srv.user)[0] == 250
        code, text = send(srv, srv.user)
        assert (code, text[:5]) == (552, b"5.2.2")
        srv.server.accounts.set_quota(srv.user, QuotaLimit(messages=5))
        assert send(srv, srv.user)[0] == 250


def test_imap_append_and_copy_over_quota(tmp_path: Path) -> None:
    with running_server(tmp_path, quota=QuotaSettings(default=QuotaLimit(messages=2))) as srv:
        m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
        m.login(srv.user, srv.password)
        assert m.append("INBOX", None, None, MSG)[0] == "OK"
        assert m.append("INBOX", None, None, MSG)[0] == "OK"
        typ, data = m.append("INBOX", None, None, MSG)
        assert typ == "NO" and b"[OVERQUOTA]" in data[0]
        m.select("INBOX")
        typ, data = m.copy("1:2", "Archive")
        assert typ == "NO" and b"[OVERQUOTA]" in data[0]
        m.store("2", "+FLAGS", "(\\Deleted)")
        m.expunge()
        assert m.copy("1", "Archive")[0] == "OK"
        m.logout()


def test_quota_config_and_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ourmail.toml").write_text(
        'domains = ["a.test"]\n[quota]\nbytes = 1048576\npermanent = true\n'
        '[quota.domain."b.test"]\nmessages = 10\n'
    )
    s = load_settings(data=str(tmp_path))
    assert s.quota.default == QuotaLimit(bytes=1048576) and s.quota.permanent
    assert s.quota.domains == {"b.test": QuotaLimit(messages=10)}
    sys.stdin = io.StringIO("long enough pw\n")
    try:
        assert main(["--data", str(tmp_path), "user", "add", "x@a.test", "--password-stdin"]) == 0
    finally:
        sys.stdin = sys.__stdin__
    assert main(["--data", str(tmp_path), "user", "quota", "x@a.test"]) == 0
    assert "limit 1.0 MiB and unlimited messages (domain or default)" in capsys.readouterr().out
    assert main(["--data", str(tmp_path), "user", "quota", "x@a.test", "--bytes", "2G"]) == 0
    assert "0 bytes in 0 messages; limit 2.0 GiB" in capsys.readouterr().out
    assert main(["--data", str(tmp_path), "user", "quota", "x@a.test", "--default"]) == 0
    assert "(domain or default)" in capsys.readouterr().out
