"""Aliases and catch-alls (off unless configured), and sending as an alias."""

import smtplib

import pytest
from conftest import RunningServer, cli, client_tls


def count(srv: RunningServer, address: str) -> int:
    folder = srv.server.store.user(address).folder("INBOX")
    folder.sync()
    return len(folder.uids())


def send(srv: RunningServer, rcpts: list[str]) -> dict:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        return s.sendmail("x@else.test", rcpts, b"Subject: hi\r\n\r\nx\r\n")


def test_alias_delivers_once_to_each_target(
    mailserver: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    mailserver.add_user("bob@example.test")
    assert cli(mailserver, "alias", "add", "Sales@example.test", "alice@example.test", "bob") == 0
    assert cli(mailserver, "alias", "list") == 0
    assert "sales@example.test\talice@example.test, bob@example.test" in capsys.readouterr().out
    assert send(mailserver, ["sales@example.test", "alice@example.test"]) == {}
    assert (
        count(mailserver, "alice@example.test") == 1 and count(mailserver, "bob@example.test") == 1
    )
    assert cli(mailserver, "alias", "del", "sales@example.test") == 0
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(mailserver, ["sales@example.test"])


def test_catch_all_is_off_until_added(mailserver: RunningServer) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(mailserver, ["anything@example.test"])
    assert cli(mailserver, "alias", "add", "@example.test", "postmaster@example.test") == 0
    assert send(mailserver, ["anything@example.test"]) == {}
    assert count(mailserver, "postmaster@example.test") == 1
    assert count(mailserver, mailserver.user) == 0  # a real user still gets their own mail only


def test_alias_rules(mailserver: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(mailserver, "alias", "add", "x@example.test", "nobody@example.test") == 1
    assert "not a local user" in capsys.readouterr().err
    assert cli(mailserver, "alias", "add", mailserver.user, "postmaster@example.test") == 1
    assert cli(mailserver, "alias", "add", "@nope.test", mailserver.user) == 1


def test_sending_as_an_alias(mailserver: RunningServer) -> None:
    assert cli(mailserver, "alias", "add", "team@example.test", mailserver.user) == 0
    assert cli(mailserver, "alias", "add", "boss@example.test", "postmaster@example.test") == 0
    with smtplib.SMTP_SSL("127.0.0.1", mailserver.port("submissions"), context=client_tls()) as s:
        s.login(mailserver.user, mailserver.password)
        msg = b"From: Team <team@example.test>\r\nSubject: from the team\r\n\r\nx\r\n"
        assert s.sendmail("team@example.test", ["postmaster@example.test"], msg) == {}
        code, _ = s.mail("boss@example.test")
        assert code == 553
