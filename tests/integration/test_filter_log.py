"""The filter log through smtplib and the scripted check, read with ``ourmail log filter``:
a refusal at RCPT is that recipient's, at DATA every recipient's, Junk filings per mailbox,
refusals at connect under the client address; old entries are pruned."""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, running_server
from peers.spamd import GTUBE, Spamd, spamd  # noqa: F401 (a fixture)

from ourmail.admin import cli
from ourmail.admin.logcmd import describe, parse_since
from ourmail.config import FilterLogSettings, FilterSettings
from ourmail.filters.filterlog import LogDB, message_id
from ourmail.interfaces import FilterEvent

CHECK = "filtercheck:factory"
BOB = "bob@example.test"


def msg(mid: str) -> bytes:
    return (
        f"From: eve@else.test\r\nTo: alice@example.test\r\nSubject: offer\r\n"
        f"Message-ID: <{mid}@else.test>\r\n\r\nBuy now\r\n"
    ).encode()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Any]:
    """A server whose chain is the scripted check with the given options, and a second user."""
    servers = []

    def start(options: Mapping[str, Any]) -> RunningServer:
        filters = FilterSettings(chain=(CHECK,), options={CHECK: dict(options)})
        cm = running_server(tmp_path / str(len(servers)), filters=filters)
        servers.append(cm)
        srv = cm.__enter__()
        srv.add_user(BOB)
        return srv

    yield start
    for cm in servers:
        cm.__exit__(None, None, None)


def entries(srv: RunningServer, *args: str) -> list[FilterEvent]:
    db = LogDB(srv.data / "filters" / "log.sqlite")
    if args[0] == "--client":
        return db.entries(client=args[1])
    return db.entries(recipient=args[0])


def wait_for_entries(srv: RunningServer, *args: str, count: int = 1) -> list[FilterEvent]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = entries(srv, *args)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} entries for {args}")


def show(srv: RunningServer, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["log", "filter", *args, "--data", str(srv.data)]) == 0
    return capsys.readouterr().out


def test_a_refusal_at_data_is_every_recipients(
    chain: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = chain({"action": "reject", "reason": "looks like a virus"})
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s, pytest.raises(smtplib.SMTPDataError):
        s.sendmail("eve@else.test", [srv.user, BOB], msg("refused1"))
    for rcpt in (srv.user, BOB):
        (event,) = wait_for_entries(srv, rcpt)
        assert (event.action, event.stage, event.check) == ("reject", "data", "scripted")
        assert event.reason == "550 5.7.1 looks like a virus"
        assert (event.sender, event.client_address) == ("eve@else.test", "127.0.0.1")
        assert event.message_id == "<refused1@else.test>"
    out = show(srv, capsys, srv.user)
    assert "refused  at data  by scripted  from <eve@else.test>  client 127.0.0.1" in out
    assert "message-id <refused1@else.test>" in out and "550 5.7.1 looks like a virus" in out
    assert out.endswith("1 entry for alice@example.test\n")


def test_a_refusal_at_rcpt_is_that_recipients_only(chain: Any) -> None:
    srv = chain({"action": "tempfail", "at": "rcpt", "reason": "not now"})
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("client.test")
        s.mail("eve@else.test")
        assert s.rcpt(BOB)[0] == 451
    (event,) = wait_for_entries(srv, BOB)
    assert (event.action, event.stage, event.recipient) == ("tempfail", "rcpt", BOB)
    assert event.message_id is None  # not known before DATA
    time.sleep(0.2)
    assert entries(srv, srv.user) == []


def test_junk_filings_are_recorded_per_mailbox(
    chain: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = chain({"action": "junk", "reason": "score 7.5"})
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("eve@else.test", [srv.user, BOB], msg("junk1"))
    for rcpt in (srv.user, BOB):
        (event,) = wait_for_entries(srv, rcpt)
        assert (event.action, event.check, event.reason) == (
            "junk",
            "scripted",
            "scripted: score 7.5",
        )
        assert event.message_id == "<junk1@else.test>"
    assert "Junk  at data  by scripted" in show(srv, capsys, BOB)


def test_accepted_mail_leaves_no_entry(chain: Any, capsys: pytest.CaptureFixture[str]) -> None:
    srv = chain({"action": "accept"})
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("eve@else.test", [srv.user], msg("fine"))
    time.sleep(0.3)
    assert show(srv, capsys, srv.user).strip().endswith("0 entries for alice@example.test")


def test_a_refusal_at_connect_is_found_by_the_client_address(
    chain: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = chain({"action": "reject", "at": "connect", "reason": "listed in bl.test"})
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", srv.port("smtp"))
    assert refused.value.smtp_code == 554
    (event,) = wait_for_entries(srv, "--client", "127.0.0.1")
    assert (event.stage, event.recipient, event.sender) == ("connect", None, None)
    out = show(srv, capsys, "--client", "127.0.0.1")
    assert "refused  at connect  by scripted  from -  client 127.0.0.1" in out
    assert "550 5.7.1 listed in bl.test" in out  # the check's verdict (the client hears 554)


def test_the_command_explains_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert cli.main(["log", "filter", "a@example.test", "--since", "soon", "--data", data]) == 1
    assert "--since takes a date (2026-11-30) or a duration" in capsys.readouterr().err
    assert cli.main(["log", "filter", "--data", data]) == 1
    assert "name a user, or a client address with --client" in capsys.readouterr().err
    assert cli.main(["log", "filter", "a@example.test", "--data", data]) == 0
    assert "the filter log is empty" in capsys.readouterr().out


def test_since_takes_dates_and_durations() -> None:
    now = 1_800_000_000.0
    assert parse_since("2h", now) == now - 7200
    assert parse_since("1d12h", now) == now - 36 * 3600
    assert parse_since("90m", now) == now - 5400
    assert parse_since("2026-11-30T10:00:00+00:00", now) == 1_796_032_800.0


def test_old_entries_are_pruned(tmp_path: Path) -> None:
    db = LogDB(tmp_path / "log.sqlite")
    now = time.time()
    event = FilterEvent(now, "reject", "data", "spam", "550 5.7.1 spam", "192.0.2.1", "a@x.test")
    old = FilterEvent(now - 40 * 86400, "junk", "data", "spam", "spam", "192.0.2.1", "a@x.test")
    db.add([old, event, event, event])
    assert db.prune(now - 30 * 86400, keep=2) == 2  # the old one, then one over the cap
    assert [e.at for e in db.entries(recipient="A@x.test")] == [now, now]


def test_the_log_can_be_switched_off(tmp_path: Path) -> None:
    filters = FilterSettings(
        chain=(CHECK,),
        options={CHECK: {"action": "reject"}},
        log=FilterLogSettings(enabled=False),
    )
    with running_server(tmp_path, filters=filters) as srv:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s, pytest.raises(smtplib.SMTPDataError):
            s.sendmail("eve@else.test", [srv.user], msg("x"))
        assert not (srv.data / "filters" / "log.sqlite").exists()


def test_message_id_is_read_from_the_header_only() -> None:
    assert message_id(b"Subject: x\r\nMessage-Id:\r\n <a@b>\r\n\r\n") == "<a@b>"
    assert message_id(b"Subject: x\r\n\r\nMessage-ID: <body@b>\r\n") is None
    assert message_id(b"Message-ID: <first@b>\r\n\r\n") == "<first@b>"
    assert message_id(b"X-Message-ID: <other@b>\r\n\r\n") is None
    assert message_id(b"Message-ID: <" + b"x" * 5000 + b">\r\n\r\n") == "<" + "x" * 999


def test_sender_text_is_shown_without_control_characters() -> None:
    event = FilterEvent(
        at=0.0,
        action="junk",
        stage="data",
        check="spam",
        reason="score 9\x1b[2J\r\nX",
        client_address="192.0.2.1",
        recipient="bob@example.test",
        sender="eve\x1b]0;owned\x07@else.test",
        message_id="<\x1b[31mred\u202e@else.test>" + "x" * 5000,
    )
    line = describe(event)
    assert not any(c in line for c in "\x1b\x07\r\u202e")
    assert line.count("\n") == 1  # the entry's own line break only
    assert "from <eve\\x1b]0;owned\\x07@else.test>" in line
    assert "message-id <\\x1b[31mred\\u202e@else.test>xxx" in line
    assert "\n    score 9\\x1b[2J\\r\\nX" in line
    assert len(line) < 1000 and "x" * 200 not in line


def test_junk_for_some_recipients_only_is_theirs(
    tmp_path: Path,
    spamd: Spamd,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The spam check files GTUBE into bob's Junk only (alice's threshold is higher): the
    log has bob's filing, with the check's reason, and nothing for alice."""
    filters = FilterSettings(chain=("spam",), options={"spam": {"address": spamd.address}})
    with running_server(tmp_path, filters=filters) as srv:
        srv.add_user(BOB)
        command = ["user", "spam", "threshold", srv.user, "--junk", "2000"]
        ourmail = [sys.executable, "-m", "ourmail", "--data", str(srv.data)]
        subprocess.run([*ourmail, *command], check=True, capture_output=True)
        gtube = msg("gtube1").replace(b"Buy now", GTUBE)
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.sendmail("eve@else.test", [srv.user, BOB], gtube)
        (event,) = wait_for_entries(srv, BOB)
        assert (event.action, event.check, event.recipient) == ("junk", "spam", BOB)
        assert event.reason.startswith("spam: ") and event.message_id == "<gtube1@else.test>"
        time.sleep(0.3)
        assert entries(srv, srv.user) == []
