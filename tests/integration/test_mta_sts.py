"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) in the outbound queue, between two ourmail servers
on loopback: the policy from a real HTTPS server (twisted.web, a test CA), TXT records from the
tests' twisted.names server, and the remote MX's STARTTLS certificate checked for real."""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiosmtpd.controller import Controller
from conftest import dns_zone
from queuehelp import (
    Pair,
    advance,
    messages,
    queued,
    report_fields,
    server_pair,
    settle,
    submit,
    wait_for,
)
from storehelp import on_reactor
from stshelp import POLICY, PolicyServer, TestCA
from twisted.internet.task import Clock
from twisted.names import dns

from ourmail.config import QueueSettings
from ourmail.queue.tlsrpt import Outcome, day_of


def txt(zone: Any, name: str, text: str) -> None:
    zone.set_records(name, dns.TXT, dns.Record_TXT(text.encode(), ttl=0))


@attrs.define
class World:
    pair: Pair
    policy: PolicyServer
    ca: TestCA

    def outcomes(self) -> list[dict[str, Any]]:
        reports = self.pair.ours.server.queue.tls_reports
        assert reports is not None
        found: list[dict[str, Any]] = []
        for path in sorted(reports.directory.glob("*.jsonl")):
            found += [json.loads(line) for line in path.read_bytes().splitlines()]
        return found


@contextlib.contextmanager
def world(
    tmp_path: Path,
    mx_certificate_valid: bool = True,
    txt_id: str = "one",
    clock: Any = None,
    **queue_settings: Any,
) -> Iterator[World]:
    zone, _ = dns_zone()
    ca = TestCA(tmp_path / "ca")
    policy = PolicyServer()
    port = policy.start(*ca.issue("mta-sts.remote.test"))
    zone.set_address("mta-sts.remote.test", "127.0.0.2")
    txt(zone, "_mta-sts.remote.test", f"v=STSv1; id={txt_id}")
    txt(zone, "_smtp._tls.remote.test", "v=TLSRPTv1; rua=mailto:tls-reports@remote.test")
    theirs: dict[str, Any] = {}
    if mx_certificate_valid:
        cert, key = ca.issue("mx.remote.test")
        theirs = {"tls_certificate": cert, "tls_key": key}
    queue = QueueSettings(
        mta_sts_port=port,
        mta_sts_ca_file=str(ca.ca_file),
        **({"retry_first": 3600} | queue_settings),
    )
    try:
        with server_pair(tmp_path, queue, clock, theirs_changes=theirs) as pair:
            yield World(pair, policy, ca)
    finally:
        policy.stop()
        zone.clear("_mta-sts.remote.test")
        zone.clear("_smtp._tls.remote.test")
        zone.clear("mta-sts.remote.test")


def deferred(w: World) -> None:
    """The message waits in our queue, and the remote MX has nothing."""
    wait_for(lambda: w.outcomes())
    settle(w.pair.ours)
    assert queued(w.pair.ours)
    assert messages(w.pair.theirs, "carol@remote.test") == []


def test_enforce_with_matching_mx_and_valid_certificate_delivers(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        assert submit(w.pair.ours, ["carol@remote.test"]) == {}
        wait_for(lambda: messages(w.pair.theirs, "carol@remote.test"))
        (outcome,) = wait_for(w.outcomes)
        assert outcome["ok"] and outcome["policy_type"] == "sts"
        assert outcome["policy_mx"] == ["mx.remote.test"] and outcome["mx_host"] == "mx.remote.test"
        cached = json.loads(
            (w.pair.ours.data / "queue" / "mta-sts" / "remote.test.json").read_text()
        )
        assert (cached["id"], cached["mode"], cached["max_age"]) == ("one", "enforce", 86400)
        assert w.policy.hits == 1


def test_policy_is_cached_until_the_txt_id_changes(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        for n in range(2):
            assert submit(w.pair.ours, ["carol@remote.test"]) == {}
            wait_for(lambda n=n: len(messages(w.pair.theirs, "carol@remote.test")) == n + 1)
        assert w.policy.hits == 1
        txt(dns_zone()[0], "_mta-sts.remote.test", "v=STSv1; id=two")
        assert submit(w.pair.ours, ["carol@remote.test"]) == {}
        wait_for(lambda: len(messages(w.pair.theirs, "carol@remote.test")) == 3)
        assert w.policy.hits == 2


def test_enforce_with_mx_not_in_the_policy_defers(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        w.policy.body = POLICY.replace(b"mx: mx.remote.test", b"mx: *.elsewhere.test")
        assert submit(w.pair.ours, ["carol@remote.test"]) == {}
        deferred(w)
        (outcome,) = w.outcomes()
        assert (outcome["result_type"], outcome["reason"]) == ("validation-failure", "mx-mismatch")


def test_enforce_with_an_untrusted_certificate_defers_and_never_goes_plaintext(
    tmp_path: Path,
) -> None:
    with world(tmp_path, mx_certificate_valid=False) as w:  # theirs: a self-signed certificate
        assert submit(w.pair.ours, ["carol@remote.test"]) == {}
        deferred(w)
        outcome = w.outcomes()[0]
        assert not outcome["ok"] and outcome["result_type"] in (
            "certificate-not-trusted",
            "validation-failure",
        )
        assert outcome["mx_host"] == "mx.remote.test"


def test_enforce_with_a_certificate_for_another_name_defers(tmp_path: Path) -> None:
    """The MX's certificate chains to the trusted CA but names another host."""
    ca = TestCA(tmp_path / "ca")
    cert, key = ca.issue("other.remote.test")
    zone, _ = dns_zone()
    policy = PolicyServer()
    port = policy.start(*ca.issue("mta-sts.remote.test"))
    zone.set_address("mta-sts.remote.test", "127.0.0.2")
    txt(zone, "_mta-sts.remote.test", "v=STSv1; id=x")
    queue = QueueSettings(mta_sts_port=port, mta_sts_ca_file=str(ca.ca_file), retry_first=3600)
    try:
        theirs = {"tls_certificate": cert, "tls_key": key}
        with server_pair(tmp_path, queue, theirs_changes=theirs) as pair:
            w = World(pair, policy, ca)
            assert submit(pair.ours, ["carol@remote.test"]) == {}
            deferred(w)
            assert w.outcomes()[0]["result_type"] == "certificate-host-mismatch"
    finally:
        policy.stop()
        zone.clear("_mta-sts.remote.test")


def test_testing_mode_delivers_and_records_the_failure(tmp_path: Path) -> None:
    with world(tmp_path, mx_certificate_valid=False) as w:
        w.policy.body = POLICY.replace(b"enforce", b"testing")
        assert submit(w.pair.ours, ["carol@remote.test"]) == {}
        wait_for(lambda: messages(w.pair.theirs, "carol@remote.test"))
        outcome = w.outcomes()[0]
        assert not outcome["ok"] and outcome["policy_type"] == "sts"
        assert outcome["policy_lines"][1] == "mode: testing"


@pytest.mark.parametrize(
    "change",
    [
        {"body": b"x" * (70 * 1024)},
        {"body": POLICY.replace(b"STSv1", b"STSv2")},
        {"body": POLICY.replace(b"mode: enforce\r\n", b"")},
        {"body": b"\x00\xff garbage"},
        {"media_type": b"text/html"},
        {"status": 302, "location": b"https://elsewhere.test/"},
        {"status": 404},
    ],
    ids=["huge", "version", "no-mode", "binary", "media-type", "redirect", "not-found"],
)
def test_unusable_policy_is_no_policy(tmp_path: Path, change: dict[str, Any]) -> None:
    """RFC 8461 §3.2, §3.3: treated as if the domain had none: the self-signed MX gets the
    mail (opportunistic TLS), and the failure is kept for TLS-RPT."""
    with world(tmp_path, mx_certificate_valid=False) as w:
        for name, value in change.items():
            setattr(w.policy, name, value)
        assert submit(w.pair.ours, ["carol@remote.test"]) == {}
        wait_for(lambda: messages(w.pair.theirs, "carol@remote.test"))
        kinds = {o["result_type"] for o in w.outcomes() if not o["ok"]}
        assert kinds <= {"sts-policy-invalid", "sts-policy-fetch-error"} and kinds
        assert not (w.pair.ours.data / "queue" / "mta-sts" / "remote.test.json").exists()


def test_tls_rpt_report_is_built_and_mailed(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        w.pair.theirs.add_user("tls-reports@remote.test")
        queue = w.pair.ours.server.queue
        assert queue.tls_reports is not None
        yesterday = queue.clock.seconds() - 86400
        on_reactor(
            queue.tls_reports.record,
            Outcome(
                "remote.test",
                False,
                "sts",
                ("version: STSv1", "mode: enforce"),
                ("mx.remote.test",),
                "certificate-host-mismatch",
                "mx.remote.test",
                "127.0.0.2",
                "127.0.0.1",
            ),
            yesterday,
        )
        for _ in range(3):
            on_reactor(queue.tls_reports.record, Outcome("remote.test", True), yesterday)
        assert on_reactor(queue.send_tls_reports) == 1
        (msg,) = wait_for(lambda: messages(w.pair.theirs, "tls-reports@remote.test"))
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "tlsrpt"
        assert msg["TLS-Report-Domain"] == "remote.test"
        assert msg["TLS-Report-Submitter"] == "mail.example.test"
        (part,) = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
        assert part.get_filename().startswith("mail.example.test!remote.test!")
        report = json.loads(gzip.decompress(part.get_payload(decode=True)))
        day = day_of(yesterday)
        assert report["date-range"] == {
            "start-datetime": f"{day}T00:00:00Z",
            "end-datetime": f"{day}T23:59:59Z",
        }
        assert report["organization-name"] == "mail.example.test"
        assert report["contact-info"] == "postmaster@example.test"
        by_type = {p["policy"]["policy-type"]: p for p in report["policies"]}
        sts = by_type["sts"]
        assert sts["policy"]["policy-domain"] == "remote.test"
        assert sts["policy"]["mx-host"] == ["mx.remote.test"]
        assert sts["summary"] == {
            "total-successful-session-count": 0,
            "total-failure-session-count": 1,
        }
        assert sts["failure-details"] == [
            {
                "result-type": "certificate-host-mismatch",
                "failed-session-count": 1,
                "sending-mta-ip": "127.0.0.1",
                "receiving-mx-hostname": "mx.remote.test",
                "receiving-ip": "127.0.0.2",
            }
        ]
        assert by_type["no-policy-found"]["summary"]["total-successful-session-count"] == 3
        # The day is sent once.
        assert on_reactor(queue.send_tls_reports) == 0


class PlainPeer:
    """An MX without STARTTLS (aiosmtpd, another implementation): what it received."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 accepted"


@pytest.mark.parametrize("mode", ["enforce", "testing"])
def test_mx_without_starttls(tmp_path: Path, mode: str) -> None:
    """enforce: deferred, nothing sent in plaintext; testing: sent, and reported."""
    with world(tmp_path) as w:
        zone, _ = dns_zone()
        zone.set_mx("remote.test", [(10, "plain.remote.test")])
        zone.set_address("plain.remote.test", "127.0.0.4")
        w.policy.body = POLICY.replace(b"mx.remote.test", b"*.remote.test").replace(
            b"enforce", mode.encode()
        )
        peer = PlainPeer()
        controller = Controller(peer, hostname="127.0.0.4", port=w.pair.port)
        controller.start()
        try:
            assert submit(w.pair.ours, ["carol@remote.test"]) == {}
            outcome = wait_for(w.outcomes)[0]
            assert outcome["result_type"] == "starttls-not-supported"
            assert outcome["mx_host"] == "plain.remote.test"
            if mode == "enforce":
                settle(w.pair.ours)
                assert peer.received == [] and queued(w.pair.ours)
            else:
                assert wait_for(lambda: peer.received) == [
                    (w.pair.ours.user, ["carol@remote.test"])
                ]
        finally:
            controller.stop()
            zone.set_mx("remote.test", [(10, "mx.remote.test")])


def test_enforce_failure_finally_bounces(tmp_path: Path) -> None:
    """A message that cannot go under the policy stays queued until max_age, then returns to
    its sender with the MTA-STS reason."""
    clock = Clock()
    clock.advance(1_800_000_000)
    settings = {"retry_first": 600, "max_age": 3600, "delay_warning": 0}
    with world(tmp_path, mx_certificate_valid=False, clock=clock, **settings) as w:
        ours = w.pair.ours
        assert submit(ours, ["carol@remote.test"]) == {}
        (qid,) = wait_for(lambda: queued(ours))
        wait_for(lambda: ours.server.queue.files.read(qid).attempts)
        for _ in range(8):
            advance(clock, 600, ours)
            if qid not in queued(ours):
                break
        assert qid not in queued(ours)
        (bounce,) = wait_for(lambda: messages(ours, ours.user))
        fields = report_fields(bounce)[1]
        assert fields["Action"] == "failed" and fields["Status"] == "4.4.7"
        assert "MTA-STS" in fields["Diagnostic-Code"]
        assert messages(w.pair.theirs, "carol@remote.test") == []
