"""A list address over SMTP (smtplib against a running server with a list intake wired):
taken from anyone (no relay), refused at RCPT by the list's size, and answered 451 when the
list manager cannot keep the message."""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import RunningServer
from twisted.internet import defer
from twisted.internet.defer import Deferred

from ourmail.interfaces import ListArrival

POST = b"From: bob@else.test\r\nTo: team@example.test\r\nSubject: hi\r\n\r\nHello team\r\n"


@attrs.define
class Intake:
    broken: bool = False
    arrivals: list[tuple[ListArrival, bytes]] = attrs.Factory(list)

    def handles(self, address: str) -> bool:
        return address in ("team@example.test", "team-request@example.test")

    def refusal(self, address: str, size: int) -> str | None:
        return "552 5.3.4 Message too big for this list" if size > 10_000 else None

    def accept(self, arrival: ListArrival, source: Any) -> Deferred[None]:
        if self.broken:
            return defer.fail(OSError("no space left"))
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.arrivals.append((arrival, data))
        return defer.succeed(None)


def test_a_list_address_takes_mail_from_anyone(mailserver: RunningServer) -> None:
    intake = Intake()
    mailserver.server.queue.local.lists = intake  # type: ignore[assignment]
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        s.ehlo("else.test")
        assert s.sendmail("bob@else.test", ["Team@example.test", mailserver.user], POST) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            s.sendmail("bob@else.test", ["team@example.test"], POST, ["SIZE=50000"])
        ((code, text),) = refused.value.recipients.values()
        assert (code, text[:5]) == (552, b"5.3.4")
    ((arrival, data),) = intake.arrivals
    assert (arrival.address, arrival.sender, arrival.client) == (
        "team@example.test",  # as the SMTP server normalised it
        "bob@else.test",
        "127.0.0.1",
    )
    assert data.startswith(b"Received: ") and data.endswith(POST)


def test_a_list_that_cannot_keep_the_message_is_answered_451(mailserver: RunningServer) -> None:
    mailserver.server.queue.local.lists = Intake(broken=True)  # type: ignore[assignment]
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        s.ehlo("else.test")
        with pytest.raises(smtplib.SMTPDataError) as failed:
            s.sendmail("bob@else.test", ["team-request@example.test"], POST)
        assert (failed.value.smtp_code, failed.value.smtp_error[:5]) == (451, b"4.3.0")
