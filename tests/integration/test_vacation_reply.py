"""The out-of-office reply on a real server: set on the settings page, sent by the server for
mail delivered over SMTP (RFC 3834, RFC 5230 §4.5, §4.6), through the outbound queue, once per
sender, never to lists, bulk or automatic mail, the null sender or blind copies."""

from __future__ import annotations

import datetime
import email
import email.policy
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, client_tls, dns_zone, running_server
from peers.dns import free_port_on
from queuehelp import wait_for
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from webhelp import Browser

from ourmail.config import QueueSettings
from ourmail.queue.files import QueueError

ALICE = "alice@example.test"
BOB = "bob@example.test"
#: The outside senders' domain: its MX is found, but refuses connections (the reply waits).
FAR = "away-senders.test"
CAROL = f"carol@{FAR}"


class Recorder:
    """Wraps the server's responder: counts its calls and knows when each is done."""

    def __init__(self, responder: Any) -> None:
        self.responder = responder
        self.calls: list[Deferred[None]] = []
        self.done = 0

    def delivered(self, mailbox: str, sender: str, head: bytes) -> Deferred[None]:
        d = self.responder.delivered(mailbox, sender, head)
        self.calls.append(d)

        def finished(result: None) -> None:
            self.done += 1

        d.addCallback(finished)
        return d


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[tuple[RunningServer, Recorder]]:
    zone, _ = dns_zone()
    zone.set_mx(FAR, [(10, f"mx.{FAR}")])
    zone.set_address(f"mx.{FAR}", "127.0.0.3")
    clock = Clock()  # a remote reply that could not be sent waits for the test's clock
    clock.advance(time.time())
    queue = QueueSettings(smtp_port=free_port_on("127.0.0.3"))  # nobody listens there
    try:
        with running_server(tmp_path, queue_clock=clock, queue=queue) as server:
            server.add_user(BOB)
            delivery = server.server.listeners["smtp"].factory.ctx.delivery  # type: ignore[attr-defined]
            recorder = Recorder(delivery.responder)
            delivery.responder = recorder
            yield server, recorder
    finally:
        zone.clear(FAR)
        zone.clear(f"mx.{FAR}")


def set_vacation(srv: RunningServer, first: datetime.date, last: datetime.date) -> None:
    browser = Browser(srv)
    assert browser.login(srv.user, srv.password).status == 303
    fields = {
        "csrf": browser.get("/settings").csrf(),
        "enabled": "on",
        "subject": "",
        "text": "Λείπω ως τις 24.\r\nFor urgent matters write to bob@example.test.",
        "first": first.isoformat(),
        "last": last.isoformat(),
        "days": "7",
    }
    assert browser.post("/settings/vacation", fields).status == 303


def mx(srv: RunningServer, sender: str, content: str, rcpt: str = ALICE) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        assert s.sendmail(sender, [rcpt], content.encode()) == {}


def mail(n: int, *fields: str, to: str = ALICE) -> str:
    head = [f"To: {to}", f"From: someone@{FAR}", f"Subject: Question {n}"]
    head.append(f"Message-ID: <q{n}@{FAR}>")
    return "\r\n".join([*head, *fields]) + "\r\n\r\nHello\r\n"


def queued(srv: RunningServer) -> list[tuple[Any, Any]]:
    """The queued messages, each with its envelope; one delivered while being read is left
    out (a local reply passes through the queue for a moment)."""
    files = srv.server.queue.files
    found = []
    for q in files.ids():
        try:
            envelope, content = files.read(q), files.content(q)
        except (QueueError, FileNotFoundError):
            continue
        found.append((envelope, email.message_from_bytes(content, policy=email.policy.default)))
    return found


def inbox(srv: RunningServer, address: str) -> list[Any]:
    folder = srv.server.store.user(address).folder("INBOX")
    folder.sync()
    return [
        email.message_from_bytes(folder.message(uid).read(), policy=email.policy.default)
        for uid in folder.uids()
    ]


def test_one_reply_per_sender_and_none_to_automatic_mail(
    srv: tuple[RunningServer, Recorder],
) -> None:
    server, recorder = srv
    today = datetime.date.today()
    set_vacation(server, today - datetime.timedelta(days=1), today + datetime.timedelta(days=1))
    mx(server, CAROL, mail(1))  # answered
    mx(server, CAROL, mail(2))  # the same sender within 7 days: not again
    mx(server, "", mail(3))  # the null sender
    mx(server, f"dave@{FAR}", mail(4, "Auto-Submitted: auto-generated"))
    mx(server, f"erin@{FAR}", mail(5, "Precedence: bulk"))
    mx(server, f"frank@{FAR}", mail(6, f"List-Id: <budget.{FAR}>"))
    mx(server, f"gina@{FAR}", mail(7, to=f"team@{FAR}"))  # alice only in the envelope (Bcc)
    with smtplib.SMTP_SSL("127.0.0.1", server.port("submissions"), context=client_tls()) as s:
        s.login(BOB, server.password)  # a local sender: the reply goes to bob's INBOX
        msg = f"From: {BOB}\r\nTo: {ALICE}\r\nSubject: Lunch?\r\nMessage-ID: <l@example.test>"
        assert s.sendmail(BOB, [ALICE], (msg + "\r\n\r\nx\r\n").encode()) == {}
    # Delivery tells the responder of each message but the one from <> (never answered).
    wait_for(lambda: recorder.done == 7)
    assert len(inbox(server, ALICE)) == 8  # every message delivered, answered or not

    # The local sender's reply is delivered at once, the remote one waits in the queue.
    (to_bob,) = wait_for(lambda: inbox(server, BOB))
    # Bob's reply leaves the queue a moment after it reaches his INBOX: wait for that.
    remote_only = wait_for(
        lambda: (
            (found := queued(server))
            and all(r.address != BOB for e, _ in found for r in e.recipients)
            and found
        )
    )
    ((envelope, to_carol),) = remote_only
    # RFC 3834 §4: sent with MAIL FROM:<>, so nothing answers it back.
    assert envelope.sender == "" and [r.address for r in envelope.recipients] == [CAROL]
    for reply, sender in [(to_carol, CAROL), (to_bob, BOB)]:
        assert reply["Auto-Submitted"] == "auto-replied"  # RFC 3834 §5
        assert reply["From"] == ALICE and reply["To"] == sender
        assert "Λείπω ως τις 24." in reply.get_content()
    # Carol's two messages are answered once; the responder hears of deliveries in worker
    # threads, so which of the two gets the reply is not fixed.
    n = to_carol["Subject"].removeprefix("Auto: Question ")
    assert n in ("1", "2") and to_bob["Subject"] == "Auto: Lunch?"
    assert to_carol["In-Reply-To"] == to_carol["References"] == f"<q{n}@{FAR}>"
    assert to_bob["In-Reply-To"] == "<l@example.test>"
    assert len(recorder.calls) == 7  # the reply to bob came from <>: nobody answers it


def test_no_reply_outside_the_dates(srv: tuple[RunningServer, Recorder]) -> None:
    server, recorder = srv
    next_week = datetime.date.today() + datetime.timedelta(days=7)
    set_vacation(server, next_week, next_week + datetime.timedelta(days=7))
    mx(server, CAROL, mail(1))
    wait_for(lambda: recorder.done == 1)
    assert queued(server) == [] and len(inbox(server, ALICE)) == 1
