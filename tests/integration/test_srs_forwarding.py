"""SRS between two ourmail servers: an alias of example.test forwards to remote.test with an
SRS0 sender, a bounce to that address comes back to the original sender, and forged or
expired SRS addresses are refused at RCPT."""

from __future__ import annotations

import contextlib
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from queuehelp import Pair, messages, queued, server_pair, wait_for
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from ourmail.srs import SenderRewriter, load_secrets


@contextlib.contextmanager
def deliveries() -> Iterator[list[dict[str, Any]]]:
    """The "delivered" log events of both servers: the envelope sender of each final delivery."""
    seen: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_format", "").startswith("delivered {id} from"):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observe)


def forward_once(pair: Pair, sender: str) -> str:
    """Mail ``sender`` -> fwd@example.test (an alias of carol@remote.test); the SRS sender."""
    pair.ours.server.accounts.set_alias("fwd@example.test", ["carol@remote.test"])
    with deliveries() as seen, smtplib.SMTP("127.0.0.1", pair.port) as s:
        s.sendmail(sender, ["fwd@example.test"], b"Subject: fwd\r\n\r\nx\r\n")
        (copy,) = wait_for(lambda: messages(pair.theirs, "carol@remote.test"))
        assert copy["Subject"] == "fwd"
        (event,) = wait_for(lambda: [e for e in seen if "carol@remote.test" in e["rcpts"]])
    srs: str = event["sender"]
    return srs


def test_forwarded_mail_leaves_with_srs0_and_its_bounce_comes_back(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        pair.theirs.add_user("dave@remote.test")
        srs = forward_once(pair, "dave@remote.test")
        assert srs.startswith("SRS0=") and srs.endswith("=remote.test=dave@example.test")
        # The bounce, from the null sender, to the SRS address on our MX: reversed and queued
        # to the original sender.
        with smtplib.SMTP("127.0.0.1", pair.port) as s:
            report = b"Subject: Undelivered Mail Returned to Sender\r\n\r\nsorry\r\n"
            assert s.sendmail("<>", [srs.lower()], report) == {}
        (bounce,) = wait_for(lambda: messages(pair.theirs, "dave@remote.test"))
        assert bounce["Subject"] == "Undelivered Mail Returned to Sender"
        wait_for(lambda: not queued(pair.ours))


def test_a_long_srs_address_is_taken_at_rcpt(tmp_path: Path) -> None:
    """The SRS0 address of a long sender has a local part beyond 64 octets: the MX takes its
    bounce all the same (RFC 5321 §4.5.3.1 asks for no such limit)."""
    sender = "firstname.lastname@a-rather-long-department-name.remote.test"
    with server_pair(tmp_path) as pair:
        srs = forward_once(pair, sender)
        assert len(srs.rpartition("@")[0]) > 64
        with smtplib.SMTP("127.0.0.1", pair.port) as s:
            s.ehlo()
            s.mail("")
            assert s.rcpt(srs)[0] == 250
            forged = srs.replace("firstname", "lastname")
            assert s.rcpt(forged)[0] == 550


def test_null_and_local_senders_are_not_rewritten(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        assert forward_once(pair, "<>") == ""
    with server_pair(tmp_path / "2") as pair:
        assert forward_once(pair, pair.ours.user) == pair.ours.user


def test_forged_and_expired_srs_addresses_are_refused(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        keys = load_secrets(pair.ours.data / "srs" / "secret")
        month_ago = Clock()
        month_ago.advance(pair.ours.server.queue.reactor.seconds() - 30 * 86400)  # type: ignore[attr-defined]
        old = SenderRewriter(keys, lambda d: False, month_ago)
        expired = old.forward("dave@remote.test", "example.test")
        forged = SenderRewriter([b"not our secret"], lambda d: False, Clock()).forward(
            "dave@remote.test", "example.test"
        )
        with smtplib.SMTP("127.0.0.1", pair.port) as s:
            s.ehlo()
            assert s.mail("")[0] == 250
            for address in (expired, forged, "SRS0=abcd=@example.test"):
                code, text = s.rcpt(address)
                assert (code, text[:5]) == (550, b"5.1.1"), (address, code, text)
            ok = SenderRewriter(keys, lambda d: False, pair.ours.server.queue.reactor)
            good = ok.forward("dave@remote.test", "example.test")
            assert s.rcpt(good)[0] == 250
        # A valid SRS address takes bounces only: with a sender it would relay to dave.
        with smtplib.SMTP("127.0.0.1", pair.port) as s:
            s.ehlo()
            assert s.mail("mallory@else.test")[0] == 250
            code, text = s.rcpt(good)
            assert (code, text[:5]) == (550, b"5.7.1"), text
