"""Submission rules (RFC 6409): own sender only, missing fields added, hourly limits, Sent copy."""

import smtplib
from pathlib import Path

import pytest
from conftest import RunningServer, client_tls, running_server

from ourmail.config import SubmissionSettings


def session(srv: RunningServer) -> smtplib.SMTP_SSL:
    s = smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), context=client_tls())
    s.ehlo()
    s.login(srv.user, srv.password)
    return s


def inbox(srv: RunningServer, folder: str = "INBOX") -> list[bytes]:
    f = srv.server.store.user(srv.user).folder(folder)
    f.sync()
    return [f.message(u).read() for u in f.uids()]


def test_sender_must_be_the_user(mailserver: RunningServer) -> None:
    with session(mailserver) as s:
        code, text = s.mail("boss@example.test")
        assert (code, text[:5]) == (553, b"5.7.1")
        assert s.mail("Alice@Example.Test")[0] == 250
        s.rcpt(mailserver.user)
        code, text = s.data(b"From: The Boss <boss@example.test>\r\nSubject: x\r\n\r\nbody\r\n")
        assert (code, text[:5]) == (553, b"5.7.1")
    with session(mailserver) as s, pytest.raises(smtplib.SMTPDataError, match="553"):
        s.sendmail(mailserver.user, [mailserver.user], b"Subject: no From at all\r\n\r\nx\r\n")
    assert inbox(mailserver) == []


def test_missing_message_id_and_date_are_added(mailserver: RunningServer) -> None:
    with session(mailserver) as s:
        s.sendmail(
            mailserver.user,
            [mailserver.user],
            b"From: alice@example.test\r\nSubject: bare\r\n\r\nhi\r\n",
        )
        s.sendmail(
            mailserver.user,
            [mailserver.user],
            b"From: alice@example.test\r\nMessage-ID: <mine@x>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n",
        )
    first, second = inbox(mailserver)
    assert (
        b"\r\nMessage-ID: <" in first
        and b"@mail.example.test>\r\n" in first
        and b"\r\nDate: " in first
    )
    assert first.endswith(b"From: alice@example.test\r\nSubject: bare\r\n\r\nhi\r\n")
    assert second.count(b"Message-ID:") == 1 and second.count(b"Date:") == 1


def test_hourly_limits(tmp_path: Path) -> None:
    limits = SubmissionSettings(max_messages_per_hour=2, max_recipients_per_hour=3)
    with running_server(tmp_path, submission=limits) as srv:
        msg = b"From: alice@example.test\r\nSubject: s\r\n\r\nx\r\n"
        with session(srv) as s:
            s.sendmail(srv.user, [srv.user, "postmaster@example.test"], msg)
            s.mail(srv.user)
            assert s.rcpt(srv.user)[0] == 250
            code, text = s.rcpt("postmaster@example.test")
            assert (code, text[:5]) == (451, b"4.7.1")  # the 4th recipient this hour
            s.data(msg)
            code, text = s.mail(srv.user)
            assert (code, text[:5]) == (451, b"4.7.1")  # a 3rd message this hour
        assert len(inbox(srv)) == 2


def test_a_groups_addresses_elsewhere_count_towards_the_hourly_limit(tmp_path: Path) -> None:
    """Finding: the limit counted RCPT commands, so one group of outside addresses made one
    recipient into many messages out; now each address elsewhere counts."""
    limits = SubmissionSettings(max_messages_per_hour=5, max_recipients_per_hour=3)
    with running_server(tmp_path, submission=limits) as srv:
        far = [f"r{n}@far.test" for n in range(4)]
        srv.server.accounts.add_group("out@example.test", "", far)
        srv.server.accounts.add_group("two@example.test", "", far[:2])
        with session(srv) as s:
            s.mail(srv.user)
            code, text = s.rcpt("out@example.test")
            assert (code, text[:5]) == (451, b"4.7.1")  # 4 addresses out, the limit is 3
            assert s.rcpt("two@example.test")[0] == 250
            assert s.rcpt(srv.user)[0] == 250
            code, text = s.rcpt("postmaster@example.test")
            assert (code, text[:5]) == (451, b"4.7.1")  # 2 + 1 + 1


def test_save_sent(tmp_path: Path) -> None:
    with running_server(tmp_path, submission=SubmissionSettings(save_sent=True)) as srv:
        with session(srv) as s:
            s.sendmail(
                srv.user,
                ["postmaster@example.test"],
                b"From: alice@example.test\r\nSubject: kept\r\n\r\nx\r\n",
            )
        (sent,) = inbox(srv, "Sent")
        assert b"Subject: kept" in sent
        folder = srv.server.store.user(srv.user).folder("Sent")
        assert folder.message(folder.uids()[0]).flags == {"\\Seen"}
    with running_server(tmp_path / "off") as srv:
        with session(srv) as s:
            s.sendmail(
                srv.user,
                ["postmaster@example.test"],
                b"From: alice@example.test\r\nSubject: not kept\r\n\r\nx\r\n",
            )
        assert inbox(srv, "Sent") == []
