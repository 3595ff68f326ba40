"""The outbound queue against a second ourmail on 127.0.0.2, found through a real DNS server."""

from __future__ import annotations

import smtplib
from pathlib import Path

import attrs
import pytest
from conftest import client_tls, dns_zone
from queuehelp import (
    advance,
    messages,
    queued,
    report_fields,
    server_pair,
    settle,
    submit,
    wait_for,
)
from test_aliases import cli
from twisted.internet.task import Clock

from ourmail.config import QueueSettings, QuotaLimit


def test_submitted_mail_reaches_the_remote_mx_over_tls(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        assert submit(pair.ours, ["carol@remote.test"]) == {}
        (got,) = wait_for(lambda: messages(pair.theirs, "carol@remote.test"))
        assert got["Subject"] == "hello"
        received = got.get_all("Received")
        # Their server saw TLS (ESMTPS) from our queue, ours saw an authenticated submission.
        assert "with ESMTPS id" in received[0] and "with ESMTPSA" in received[1]
        wait_for(lambda: not queued(pair.ours))
        assert messages(pair.ours, pair.ours.user) == []  # no report: nothing asked for


def test_mx_preference_order_and_fallback(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    with server_pair(tmp_path) as pair:
        # The best MX has an address where nothing listens; the next one works.
        zone.set_mx("remote.test", [(20, "mx.remote.test"), (5, "dead.remote.test")])
        zone.set_address("dead.remote.test", "127.0.0.3")
        assert submit(pair.ours, ["carol@remote.test"]) == {}
        wait_for(lambda: messages(pair.theirs, "carol@remote.test"))


def test_implicit_mx_when_the_domain_has_only_an_address(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    with server_pair(tmp_path) as pair:
        zone.clear("remote.test")
        zone.set_address("remote.test", "127.0.0.2")  # RFC 5321 §5.1: no MX, use the A record
        assert submit(pair.ours, ["carol@remote.test"]) == {}
        wait_for(lambda: messages(pair.theirs, "carol@remote.test"))


def test_unknown_remote_user_bounces_to_the_sender(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        body = b"Subject: lost\r\nMessage-ID: <m1@example.test>\r\n\r\nwhere is it\r\n"
        assert submit(pair.ours, ["nobody@remote.test", "carol@remote.test"], body) == {}
        (bounce,) = wait_for(lambda: messages(pair.ours, pair.ours.user))
        assert wait_for(lambda: messages(pair.theirs, "carol@remote.test"))
        assert bounce["Subject"] == "Undelivered Mail Returned to Sender"
        assert bounce["From"].addresses[0].username == "MAILER-DAEMON"
        per_message, *rcpts = report_fields(bounce)
        assert per_message["Reporting-MTA"] == "dns; mail.example.test"
        (rcpt,) = rcpts
        assert rcpt["Final-Recipient"] == "rfc822;nobody@remote.test"
        assert rcpt["Action"] == "failed" and rcpt["Status"] == "5.1.1"
        assert rcpt["Remote-MTA"] == "dns; mx.remote.test"
        assert rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
        (original,) = [p for p in bounce.walk() if p.get_content_type() == "message/rfc822"]
        assert original.get_payload()[0]["Message-ID"] == "<m1@example.test>"
        wait_for(lambda: not queued(pair.ours))


def test_nonexistent_domain_bounces_at_once(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        assert submit(pair.ours, ["carol@no-such-domain.test"]) == {}
        (bounce,) = wait_for(lambda: messages(pair.ours, pair.ours.user))
        assert report_fields(bounce)[1]["Status"] == "5.1.2"


def test_null_mx_bounces(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    with server_pair(tmp_path) as pair:
        zone.set_mx("nomail.test", [(0, ".")])  # RFC 7505
        assert submit(pair.ours, ["x@nomail.test"]) == {}
        (bounce,) = wait_for(lambda: messages(pair.ours, pair.ours.user))
        assert report_fields(bounce)[1]["Status"] == "5.1.10"


def test_notify_never_and_headers_only_return(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        assert submit(pair.ours, ["nobody@remote.test"], rcpt_options=("NOTIFY=NEVER",)) == {}
        wait_for(lambda: not queued(pair.ours))
        assert messages(pair.ours, pair.ours.user) == []
        assert submit(pair.ours, ["nobody@remote.test"], mail_options=("RET=HDRS",)) == {}
        (bounce,) = wait_for(lambda: messages(pair.ours, pair.ours.user))
        types = [p.get_content_type() for p in bounce.walk()]
        assert "text/rfc822-headers" in types and "message/rfc822" not in types


def test_success_notice_comes_back_from_the_remote_server(tmp_path: Path) -> None:
    """NOTIFY and ENVID are passed on to a DSN-capable server, which reports delivery."""
    with server_pair(tmp_path) as pair:
        sent = submit(
            pair.ours,
            ["carol@remote.test"],
            mail_options=("ENVID=track+2Bme", "RET=HDRS"),
            rcpt_options=("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;carol@remote.test"),
        )
        assert sent == {}
        (notice,) = wait_for(lambda: messages(pair.ours, pair.ours.user))
        per_message, rcpt = report_fields(notice)
        assert per_message["Reporting-MTA"] == "dns; mx.remote.test"
        assert per_message["Original-Envelope-Id"] == "track+2Bme"
        assert rcpt["Action"] == "delivered" and rcpt["Status"] == "2.0.0"
        assert rcpt["Original-Recipient"] == "rfc822;carol@remote.test"


def test_forwarding_alias_goes_through_the_queue(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        pair.ours.server.accounts.set_alias(
            "fwd@example.test", ["carol@remote.test", pair.ours.user]
        )
        with smtplib.SMTP("127.0.0.1", pair.port) as s:
            s.sendmail("dan@else.test", ["fwd@example.test"], b"Subject: fwd\r\n\r\nx\r\n")
        (copy,) = wait_for(lambda: messages(pair.theirs, "carol@remote.test"))
        assert copy["Subject"] == "fwd"
        assert [m["Subject"] for m in messages(pair.ours, pair.ours.user)] == ["fwd"]


def test_bounce_to_a_forwarding_alias_goes_through_delivery(tmp_path: Path) -> None:
    """The queue delivers a bounce for a local sender alias as SMTP would (smtp/delivery.py):
    a copy to the local target, and the forward queued again as a new message."""
    with server_pair(tmp_path) as pair:
        ours = pair.ours
        ours.server.accounts.set_alias("team@example.test", [ours.user, "carol@remote.test"])
        with smtplib.SMTP_SSL("127.0.0.1", ours.port("submissions"), context=client_tls()) as s:
            s.login(ours.user, ours.password)
            msg = b"From: <team@example.test>\r\nSubject: lost\r\n\r\nx\r\n"
            assert s.sendmail("team@example.test", ["nobody@remote.test"], msg) == {}
        (bounce,) = wait_for(lambda: messages(ours, ours.user))
        assert bounce["Subject"] == "Undelivered Mail Returned to Sender"
        (forwarded,) = wait_for(lambda: messages(pair.theirs, "carol@remote.test"))
        assert forwarded["Subject"] == "Undelivered Mail Returned to Sender"
        wait_for(lambda: not queued(ours))


def test_the_mx_port_is_no_open_relay_even_with_a_queue(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair, smtplib.SMTP("127.0.0.1", pair.port) as s:
        s.ehlo()
        s.mail("dan@else.test")
        assert s.rcpt("carol@remote.test")[0] == 554
    assert queued(pair.ours) == []


def test_null_sender_failures_are_not_bounced(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        pair.ours.server.accounts.set_alias("fwd@example.test", ["nobody@remote.test"])
        with smtplib.SMTP("127.0.0.1", pair.port) as s:
            s.sendmail("<>", ["fwd@example.test"], b"Subject: a bounce\r\n\r\nx\r\n")
        wait_for(lambda: not queued(pair.ours))
        assert messages(pair.ours, "postmaster@example.test") == []


def test_dsn_parameters_are_checked(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair, smtplib.SMTP("127.0.0.1", pair.port) as s:
        s.ehlo()
        assert s.has_extn("dsn")
        assert s.mail("a@else.test", ["RET=ALL"])[0] == 501
        assert s.mail("a@else.test", ["ENVID=" + "x" * 101])[0] == 501
        assert s.mail("a@else.test", ["RET=FULL", "ENVID=a+2Bb"])[0] == 250
        assert s.rcpt(pair.ours.user, ["NOTIFY=NEVER,SUCCESS"])[0] == 501
        assert s.rcpt(pair.ours.user, ["ORCPT=nosemicolon"])[0] == 501
        assert s.rcpt(pair.ours.user, ["ORCPT=rfc822;a+ZZb"])[0] == 501
        assert s.rcpt(pair.ours.user, ["NOTIFY=SUCCESS", "ORCPT=rfc822;a+40b"])[0] == 250


def test_local_delivery_success_notice(tmp_path: Path) -> None:
    """NOTIFY=SUCCESS on mail delivered here: a "delivered" report to the (remote) sender."""
    with server_pair(tmp_path) as pair, smtplib.SMTP("127.0.0.1", pair.port) as s:
        s.sendmail(
            "carol@remote.test",
            [pair.ours.user],
            b"Subject: tell me\r\n\r\nx\r\n",
            rcpt_options=["NOTIFY=SUCCESS"],
        )
        notice = wait_for(
            lambda: [
                m
                for m in messages(pair.theirs, "carol@remote.test")
                if m.get_content_type() == "multipart/report"
            ]
        )
        assert report_fields(notice[0])[1]["Action"] == "delivered"


def test_retry_back_off_delay_warning_and_expiry(tmp_path: Path) -> None:
    """A host that never answers: retries back off, a delay warning after 4 hours, then the
    message returns after 5 days with 4.4.7, all on a controlled clock."""
    zone, _ = dns_zone()
    clock = Clock()
    clock.advance(1_800_000_000)
    with server_pair(tmp_path, clock=clock) as pair:
        zone.set_address("mx.remote.test", "127.0.0.3")  # nothing listens there
        assert submit(pair.ours, ["carol@remote.test"]) == {}
        (qid,) = wait_for(lambda: queued(pair.ours))
        envelope = wait_for(lambda: (e := pair.ours.server.queue.files.read(qid)).attempts and e)
        settle(pair.ours)
        envelope = pair.ours.server.queue.files.read(qid)
        assert envelope.attempts == 1
        assert envelope.next_attempt == pytest.approx(1_800_000_000 + 300, abs=2)
        assert envelope.recipients[0].status == "4.4.1"
        advance(clock, 299, pair.ours)
        assert pair.ours.server.queue.files.read(qid).attempts == 1  # not yet due
        advance(clock, 2, pair.ours)
        envelope = pair.ours.server.queue.files.read(qid)
        assert envelope.attempts == 2
        assert envelope.next_attempt == pytest.approx(clock.seconds() + 600, abs=2)
        for _ in range(6):
            advance(clock, 3600, pair.ours)
        (warning,) = messages(pair.ours, pair.ours.user)
        assert warning["Subject"].startswith("Delayed Mail")
        fields = report_fields(warning)[1]
        assert fields["Action"] == "delayed" and "Will-Retry-Until" in fields
        for _ in range(5 * 24):
            advance(clock, 3600, pair.ours)
            if qid not in queued(pair.ours):
                break
        assert qid not in queued(pair.ours)
        wait_for(lambda: len(messages(pair.ours, pair.ours.user)) == 2)
        bounce = messages(pair.ours, pair.ours.user)[1]
        fields = report_fields(bounce)[1]
        assert fields["Action"] == "failed" and fields["Status"] == "4.4.7"
        assert "127.0.0.3" in fields["Diagnostic-Code"]


def test_temporary_failure_is_retried_until_delivered(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    clock = Clock()
    clock.advance(1_800_000_000)
    with server_pair(tmp_path, clock=clock) as pair:
        pair.theirs.server.accounts.set_quota("carol@remote.test", QuotaLimit(bytes=10))
        assert submit(pair.ours, ["carol@remote.test"]) == {}
        (qid,) = wait_for(lambda: queued(pair.ours))
        wait_for(lambda: pair.ours.server.queue.files.read(qid).attempts)
        settle(pair.ours)  # the runner has planned the retry (else the advance comes too soon)
        rcpt = pair.ours.server.queue.files.read(qid).recipients[0]
        assert rcpt.status == "4.2.2" and rcpt.state == "pending"
        pair.theirs.server.accounts.set_quota("carol@remote.test", None)
        advance(clock, 301, pair.ours)
        assert messages(pair.theirs, "carol@remote.test")
        assert queued(pair.ours) == []


def test_one_connection_carries_several_messages(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    clock = Clock()
    clock.advance(1_800_000_000)
    queue = QueueSettings(max_per_destination=1)
    with server_pair(tmp_path, queue=queue, clock=clock) as pair:
        zone.set_address("mx.remote.test", "127.0.0.3")
        for n in range(5):
            submit(pair.ours, ["carol@remote.test"], f"Subject: n{n}\r\n\r\nx\r\n".encode())
        wait_for(lambda: len(queued(pair.ours)) == 5)
        wait_for(
            lambda: all(pair.ours.server.queue.files.read(q).attempts for q in queued(pair.ours))
        )
        settle(pair.ours)
        zone.set_address("mx.remote.test", "127.0.0.2")
        before = pair.theirs.server.listeners["smtp"].factory.sessions
        advance(clock, 301, pair.ours)
        wait_for(lambda: not queued(pair.ours))
        assert len(messages(pair.theirs, "carol@remote.test")) == 5
        assert pair.theirs.server.listeners["smtp"].factory.sessions - before == 1


def test_smart_host_with_required_tls_and_auth(tmp_path: Path) -> None:
    """All mail goes to a smart host (here: their submission port) over verified TLS + AUTH."""
    password_file = tmp_path / "relay-password"
    password_file.write_text("correct horse battery staple\n")
    with server_pair(tmp_path) as pair:
        # Theirs also serves example.test, so alice may send through it as herself.
        pair.theirs.server.accounts.add_domain("example.test")
        pair.theirs.add_user("alice@example.test")
        relay = attrs.evolve(
            QueueSettings().relay,
            host=f"mx.remote.test:{pair.theirs.port('submission')}",
            username="alice@example.test",
            password_file=str(password_file),
            ca_file=str(pair.theirs.data / "tls" / "cert.pem"),
        )
        queue = pair.ours.server.queue
        # First with the wrong CA: verification fails, the message waits.
        wrong = attrs.evolve(relay, ca_file=str(pair.ours.data / "tls" / "cert.pem"))
        queue.settings = attrs.evolve(queue.settings, relay=wrong)
        assert submit(pair.ours, ["carol@remote.test"]) == {}
        (qid,) = queued(pair.ours)
        wait_for(lambda: queue.files.read(qid).attempts)
        assert queue.files.read(qid).recipients[0].status.startswith("4.")
        assert messages(pair.theirs, "carol@remote.test") == []
        queue.settings = attrs.evolve(queue.settings, relay=relay)
        assert cli(pair.ours, "queue", "retry", qid) == 0
        (got,) = wait_for(lambda: messages(pair.theirs, "carol@remote.test"))
        assert "with ESMTPSA" in got.get_all("Received")[0]  # TLS and AUTH on the smart host


def test_queue_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zone, _ = dns_zone()
    clock = Clock()
    clock.advance(1_800_000_000)
    with server_pair(tmp_path, clock=clock) as pair:
        ours = pair.ours
        zone.set_address("mx.remote.test", "127.0.0.3")
        for n in range(3):
            submit(ours, ["carol@remote.test"], f"Subject: n{n}\r\n\r\nx\r\n".encode())
        first, second, third = wait_for(lambda: len(queued(ours)) == 3 and queued(ours))
        wait_for(lambda: all(ours.server.queue.files.read(q).attempts for q in queued(ours)))
        capsys.readouterr()
        assert cli(ours, "queue", "list") == 0
        listing = capsys.readouterr().out
        assert first in listing and "127.0.0.3" in listing and "3 messages" in listing
        assert cli(ours, "queue", "show", first) == 0
        shown = capsys.readouterr().out
        assert "recipient: carol@remote.test pending 4.4.1" in shown and "Subject: n0" in shown
        assert cli(ours, "queue", "show", "../../etc") == 1
        assert cli(ours, "queue", "hold", first) == 0
        assert cli(ours, "queue", "hold", second) == 0
        zone.set_address("mx.remote.test", "127.0.0.2")
        assert cli(ours, "queue", "retry") == 0  # all: the held ones stay held
        advance(clock, 0, ours)
        wait_for(lambda: third not in queued(ours))
        assert [m["Subject"] for m in messages(pair.theirs, "carol@remote.test")] == ["n2"]
        assert ours.server.queue.files.read(first).held
        assert cli(ours, "queue", "delete", second) == 0
        assert cli(ours, "queue", "release", first) == 0
        advance(clock, 0, ours)
        wait_for(lambda: not queued(ours))
        assert sorted(m["Subject"] for m in messages(pair.theirs, "carol@remote.test")) == [
            "n0",
            "n2",
        ]
        assert cli(ours, "queue", "delete", second) == 1
