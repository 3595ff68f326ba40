"""The filter chain in an SMTP session: verdicts at each stage, Authentication-Results,
forged results removed, Junk, failures and time-outs answered by each check's policy."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, client_tls, running_server

from ourmail.config import FilterSettings

CHECK = "filtercheck:factory"
MSG = (
    b"Authentication-Results: mail.example.test; spf=pass smtp.mailfrom=forged.test\r\n"
    b"Authentication-Results: other.test; dkim=pass header.d=other.test\r\n"
    b"From: bob@else.test\r\nTo: alice@example.test\r\nSubject: Hello\r\n\r\nHi\r\n"
)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Any]:
    """Start a server whose chain is the scripted check with the given options."""
    servers = []

    def start(options: Mapping[str, Any], **settings: Any) -> RunningServer:
        filters = FilterSettings(chain=(CHECK,), options={CHECK: dict(options)}, **settings)
        cm = running_server(tmp_path / str(len(servers)), filters=filters)
        servers.append(cm)
        return cm.__enter__()

    yield start
    for cm in servers:
        cm.__exit__(None, None, None)


def stored(srv: RunningServer, folder: str = "") -> list[bytes]:
    root = srv.server.store.shards.user_dir(srv.user) / folder
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((root / sub).glob("*"))]


def send(srv: RunningServer, message: bytes = MSG) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("bob@else.test", [srv.user], message)


def test_results_are_added_and_forged_ones_removed(chain: Any) -> None:
    srv = chain({"result": "spf=pass", "header": "X-Scripted: yes"})
    send(srv)
    (message,) = stored(srv)
    head = message.split(b"\r\n\r\n", 1)[0]
    received, rest = head.split(b"\r\nAuthentication-Results: ", 1)
    assert received.startswith(b"Received: from ") and b"\r\n\t" in received  # ours, folded
    assert rest.startswith(
        b"mail.example.test; spf=pass smtp.mailfrom=x.test\r\nX-Scripted: yes\r\n"
        b"Authentication-Results: other.test; dkim=pass"
    )
    assert b"forged.test" not in message  # claimed our authserv-id: removed (RFC 8601 §5)
    assert b"Authentication-Results: other.test; dkim=pass" in message  # someone else's: kept


def test_reject_at_data_is_550_and_nothing_is_stored(chain: Any) -> None:
    srv = chain({"action": "reject", "reason": "policy says no"})
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv)
    assert e.value.smtp_code == 550 and b"5.7.1 policy says no" in e.value.smtp_error
    assert stored(srv) == []


def test_refusals_at_mail_and_rcpt(chain: Any) -> None:
    srv = chain({"action": "tempfail", "at": "mail", "reason": "try later"})
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("client.test")
        assert s.mail("bob@else.test") == (451, b"4.7.1 try later")
        assert s.rcpt(srv.user)[0] == 503  # no transaction was opened
    srv = chain({"action": "reject", "at": "rcpt", "reason": "not for you"})
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("client.test")
        assert s.mail("bob@else.test")[0] == 250
        assert s.rcpt(srv.user) == (550, b"5.7.1 not for you")


def test_refused_at_connect_hears_554_then_503_until_quit(chain: Any) -> None:
    srv = chain({"action": "reject", "at": "connect", "reason": "listed"})
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", srv.port("smtp"))
    assert e.value.smtp_code == 554 and b"5.7.1 listed" in e.value.smtp_error


def test_junk_goes_to_the_junk_folder(chain: Any) -> None:
    srv = chain({"action": "junk", "reason": "smells"})
    send(srv)
    assert stored(srv) == []
    (message,) = stored(srv, ".Junk")
    assert b"X-Ourmail-Junk: scripted: smells\r\n" in message


@pytest.mark.parametrize(("policy", "accepted"), [("accept", True), ("tempfail", False)])
def test_a_failing_check_follows_its_policy(chain: Any, policy: str, accepted: bool) -> None:
    srv = chain({"fail": True, "on_error": policy})
    if accepted:
        send(srv)
        assert len(stored(srv)) == 1
    else:
        with pytest.raises(smtplib.SMTPDataError) as e:
            send(srv)
        assert e.value.smtp_code == 451 and stored(srv) == []


def test_a_slow_check_times_out_and_follows_its_policy(chain: Any) -> None:
    srv = chain({"delay": 30, "timeout": 0.3, "on_error": "tempfail"})
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv)
    assert e.value.smtp_code == 451 and stored(srv) == []


def test_submission_is_not_checked_unless_asked(chain: Any) -> None:
    srv = chain({"action": "reject", "at": "mail"})
    srv2 = chain({"action": "reject", "at": "mail"}, check_submission=True)
    for server, code in ((srv, 250), (srv2, 550)):
        with smtplib.SMTP("127.0.0.1", server.port("submission")) as s:
            s.starttls(context=client_tls())
            s.login(server.user, server.password)
            assert s.mail(server.user)[0] == code


def test_a_trusted_check_runs_on_submission_too(chain: Any) -> None:
    """``trusted = true`` (an antivirus): the check runs where the listener trusts the mail."""
    srv = chain({"action": "reject", "at": "data", "trusted": True})
    with smtplib.SMTP("127.0.0.1", srv.port("submission")) as s:
        s.starttls(context=client_tls())
        s.login(srv.user, srv.password)
        s.mail(srv.user)
        s.rcpt(srv.user)
        assert s.data(b"From: " + srv.user.encode() + b"\r\nSubject: x\r\n\r\nHi\r\n")[0] == 550


FORGED = (
    b"Authentication-Results: ((nested)) mail.example.test; dkim=pass header.d=bank.test\r\n"
    b"From: bob@else.test\r\nSubject: Hello\r\n\r\nHi\r\n"
)


def test_forged_results_are_removed_even_where_no_check_runs(tmp_path: Path) -> None:
    """An empty chain (and LMTP, submission) still removes fields claiming our id (RFC 8601
    §5), or a forward's ARC seal would vouch for them."""
    with running_server(tmp_path, filters=FilterSettings(chain=())) as srv:
        send(srv, FORGED)
        (message,) = stored(srv)
    assert b"bank.test" not in message and b"Authentication-Results" not in message


def test_a_header_too_long_to_check_is_refused(chain: Any) -> None:
    srv = chain({})
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"x" * 900) for i in range(300))
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, padding + MSG)
    assert e.value.smtp_code == 552 and b"5.3.4" in e.value.smtp_error
    assert stored(srv) == []


def test_connect_verdicts_hold_for_every_message_of_the_session(chain: Any) -> None:
    srv = chain({"action": "junk", "at": "connect", "reason": "listed", "result": "dnsbl=fail"})
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        for _ in range(2):  # two transactions: the second after the first's reset
            s.sendmail("bob@else.test", [srv.user], MSG)
    junk = stored(srv, ".Junk")
    assert len(junk) == 2 and stored(srv) == []
    assert all(b"dnsbl=fail" in m and b"X-Ourmail-Junk: scripted: listed" in m for m in junk)


def test_a_refused_recipients_results_stay_out_of_the_message(chain: Any) -> None:
    srv = chain({"action": "reject", "at": "rcpt", "result": "x-rcpt=fail"})
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("client.test")
        s.mail("bob@else.test")
        assert s.rcpt(srv.user)[0] == 550
    srv2 = chain({"action": "accept", "at": "rcpt", "result": "x-rcpt=pass"})
    send(srv2)
    (message,) = stored(srv2)
    assert b"x-rcpt=pass" in message
