"""The queue against a different SMTP implementation: aiosmtpd (PyPI) on 127.0.0.4, a server
without PIPELINING, STARTTLS or DSN, answering each recipient as the test says."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import dns_zone
from queuehelp import (
    Pair,
    messages,
    queued,
    report_fields,
    server_pair,
    settle,
    submit,
    wait_for,
)

OLD = "old.test"


class Peer:
    """Accepts everything except local parts starting with temp (450) or perm (550)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("temp"):
            return "450 4.2.0 try again later"
        if address.startswith("perm"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 accepted"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Pair, Peer]]:
    zone, _ = dns_zone()
    with server_pair(tmp_path) as pair:
        zone.set_mx(OLD, [(10, f"mx.{OLD}")])
        zone.set_address(f"mx.{OLD}", "127.0.0.4")
        peer = Peer()
        controller = Controller(peer, hostname="127.0.0.4", port=pair.port, enable_SMTPUTF8=False)
        controller.start()
        try:
            yield pair, peer
        finally:
            controller.stop()


def test_plain_server_gets_mail_and_a_relayed_notice_goes_back(
    pair: tuple[Pair, Peer],
) -> None:
    servers, peer = pair
    body = b"Subject: to an old server\r\n\r\nline\r\n.dot line\r\n"
    sent = submit(servers.ours, [f"bob@{OLD}"], body, rcpt_options=("NOTIFY=SUCCESS",))
    assert sent == {}
    (got,) = wait_for(lambda: peer.received)
    sender, rcpts, content = got
    assert (sender, rcpts) == (servers.ours.user, [f"bob@{OLD}"])
    assert b"\r\n.dot line\r\n" in content  # dot-stuffed on the wire, unstuffed by the peer
    # The peer offers no DSN, so ourmail itself reports the hand-over (RFC 3461 §5.2.3).
    (notice,) = wait_for(lambda: messages(servers.ours, servers.ours.user))
    rcpt = report_fields(notice)[1]
    assert rcpt["Action"] == "relayed" and rcpt["Remote-MTA"] == f"dns; mx.{OLD}"


def test_each_recipient_gets_its_own_outcome(pair: tuple[Pair, Peer]) -> None:
    servers, peer = pair
    assert submit(servers.ours, [f"bob@{OLD}", f"perm@{OLD}", f"temp@{OLD}"]) == {}
    wait_for(lambda: peer.received)
    (bounce,) = wait_for(lambda: messages(servers.ours, servers.ours.user))
    _, *rcpts = report_fields(bounce)
    assert [r["Final-Recipient"] for r in rcpts] == [f"rfc822;perm@{OLD}"]
    assert peer.received[0][1] == [f"bob@{OLD}"]
    settle(servers.ours)  # the bounce is in alice's mailbox; its queue file goes a moment later
    (qid,) = queued(servers.ours)  # temp@ waits for its retry
    envelope = servers.ours.server.queue.files.read(qid)
    states = {r.address: (r.state, r.status) for r in envelope.recipients}
    assert states == {
        f"bob@{OLD}": ("relayed", "2.0.0"),
        f"perm@{OLD}": ("failed", "5.1.1"),
        f"temp@{OLD}": ("pending", "4.2.0"),
    }


def test_a_message_that_needs_smtputf8_is_not_sent_without_it(pair: tuple[Pair, Peer]) -> None:
    servers, peer = pair
    sent = submit(servers.ours, [f"jörg@{OLD}"], mail_options=("SMTPUTF8",))
    assert sent == {}
    (bounce,) = wait_for(lambda: messages(servers.ours, servers.ours.user))
    assert report_fields(bounce)[1]["Status"] == "5.6.7"
    assert peer.received == []


def test_failed_tls_handshake_falls_back_to_plaintext(tmp_path: Path) -> None:
    """Opportunistic TLS (RFC 7435): a server that offers STARTTLS but fails every handshake
    with us still gets its mail, in plaintext, as from Postfix at its "may" level."""
    zone, _ = dns_zone()
    with server_pair(tmp_path) as servers:
        zone.set_mx(OLD, [(10, f"mx.{OLD}")])
        zone.set_address(f"mx.{OLD}", "127.0.0.4")
        broken = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_dir = servers.ours.data / "tls"
        broken.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
        broken.load_verify_locations(tls_dir / "cert.pem")
        broken.verify_mode = ssl.CERT_REQUIRED  # a client certificate, which we never send
        peer = Peer()
        controller = Controller(peer, hostname="127.0.0.4", port=servers.port, tls_context=broken)
        controller.start()
        try:
            assert submit(servers.ours, [f"bob@{OLD}"]) == {}
            (got,) = wait_for(lambda: peer.received)
            assert got[1] == [f"bob@{OLD}"]
            assert "127.0.0.4" in servers.ours.server.queue.connector.plaintext_until
            assert submit(servers.ours, [f"carol@{OLD}"]) == {}  # straight to plaintext now
            wait_for(lambda: len(peer.received) == 2)
        finally:
            controller.stop()


def test_ipv6_only_mail_host(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    with server_pair(tmp_path) as servers:
        zone.set_mx("six.test", [(10, "mx.six.test")])
        zone.set_address("mx.six.test", "::1")  # an AAAA record only
        peer = Peer()
        controller = Controller(peer, hostname="::1", port=servers.port)
        controller.start()
        try:
            assert submit(servers.ours, ["bob@six.test"]) == {}
            (got,) = wait_for(lambda: peer.received)
            assert got[1] == ["bob@six.test"]
        finally:
            controller.stop()
