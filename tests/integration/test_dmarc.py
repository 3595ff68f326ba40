"""DMARC (ourmail/filters/dmarc.py) on a running server with the chain spf, dkim, dmarc
against the loopback twisted.names server, and its aggregate reports through the real queue.

The ``spf`` of the chain is tests/spfnotes.py, which writes SPF's contract with a scripted
result (the real SPF check is built in another branch of issue 14)."""

from __future__ import annotations

import email
import gzip
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import RunningServer, dns_zone, running_server
from dkimpeers import mail_dkim_sign, publish, rsa_key, sign
from lxml import etree
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.threads import blockingCallFromThread
from twisted.names.dns import TXT

from ourmail.config import DNSSettings, FilterSettings
from ourmail.filters.dmarc import DMARCCheck, factory
from ourmail.filters.dmarcreport import Reporter, ResultStore
from ourmail.interfaces import FilterEnvironment, MailContext
from ourmail.net.dns import make_resolver

SPF = "spfnotes:factory"
SPF_PASS = {"spfpass.test": "pass"}


def setup_domain(domain: str, record: str | None) -> None:
    zone, _ = dns_zone()
    publish(zone, domain, "sel", rsa_key()[1])
    if record is not None:
        zone.set_txt(f"_dmarc.{domain}", [record.encode()])


def message(domain: str, body: str = "Agenda attached.") -> bytes:
    return (
        f"From: Bob <bob@{domain}>\r\nTo: alice@example.test\r\nSubject: Agenda\r\n"
        f"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    filters = FilterSettings(chain=(SPF, "dkim", "dmarc"), options={SPF: {"results": SPF_PASS}})
    dns = DNSSettings(servers=(f"127.0.0.1:{dns_zone()[1]}",))
    with running_server(tmp_path, filters=filters, dns=dns) as srv:
        yield srv


def send(srv: RunningServer, content: bytes, sender: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail(sender, [srv.user], content)


def stored(srv: RunningServer, folder: str = "") -> list[bytes]:
    root = srv.server.store.shards.user_dir(srv.user) / folder
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((root / sub).glob("*"))]


def results_of(stored_message: bytes) -> bytes:
    head = stored_message.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\nX-Ourmail-Junk", 1)[0].split(b"\r\nReceived:", 1)[0]


def test_pass_through_aligned_dkim(server: RunningServer, tmp_path: Path) -> None:
    setup_domain("dkimok.test", "v=DMARC1; p=reject")
    # signed by a subdomain: relaxed alignment (RFC 7489 §3.1.1)
    publish(dns_zone()[0], "mail.dkimok.test", "sel", rsa_key()[1])
    signed = mail_dkim_sign(message("dkimok.test"), "mail.dkimok.test", "sel", "relaxed", tmp_path)
    send(server, signed, "bounce@elsewhere.test")
    (msg,) = stored(server)
    assert b"dmarc=pass header.from=dkimok.test policy.dmarc=reject" in results_of(msg)


def test_pass_through_aligned_spf(server: RunningServer) -> None:
    setup_domain("spfpass.test", "v=DMARC1; p=reject")
    send(server, message("spfpass.test"), "bob@spfpass.test")
    (msg,) = stored(server)
    assert b"spf=pass" in msg and b"dmarc=pass header.from=spfpass.test" in msg


def test_reject_names_the_policy(server: RunningServer) -> None:
    setup_domain("strict.test", "v=DMARC1; p=reject")
    signed = sign(message("strict.test"), "strict.test", "sel")
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(server, signed.replace(b"Agenda attached", b"Pay this invoice"), "x@strict.test")
    assert e.value.smtp_code == 550
    assert e.value.smtp_error == b"5.7.1 Message rejected by DMARC policy of strict.test"
    assert stored(server) == []


def test_quarantine_files_into_junk(server: RunningServer) -> None:
    setup_domain("quarantine.test", "v=DMARC1; p=quarantine")
    send(server, message("quarantine.test"), "x@quarantine.test")
    assert stored(server) == []
    (msg,) = stored(server, ".Junk")
    assert b"dmarc=fail header.from=quarantine.test policy.dmarc=quarantine" in msg
    assert b"X-Ourmail-Junk: dmarc: DMARC policy of quarantine.test (quarantine)" in msg


def test_p_none_delivers_with_the_failure_recorded(server: RunningServer) -> None:
    setup_domain("monitor.test", "v=DMARC1; p=none")
    send(server, message("monitor.test"), "x@monitor.test")
    (msg,) = stored(server)
    assert b"dmarc=fail header.from=monitor.test policy.dmarc=none" in msg


def test_no_policy_is_none(server: RunningServer) -> None:
    send(server, message("nopolicy.test"), "x@nopolicy.test")
    (msg,) = stored(server)
    assert b"dmarc=none header.from=nopolicy.test" in msg


def test_sp_applies_to_subdomains(server: RunningServer) -> None:
    setup_domain("parent.test", "v=DMARC1; p=none; sp=reject")
    send(server, message("parent.test"), "x@parent.test")  # p=none for the domain itself
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(server, message("news.parent.test"), "x@news.parent.test")
    assert e.value.smtp_error == b"5.7.1 Message rejected by DMARC policy of parent.test"
    assert len(stored(server)) == 1


def test_pct_0_samples_out(server: RunningServer) -> None:
    setup_domain("pctq.test", "v=DMARC1; p=quarantine; pct=0")
    setup_domain("pctr.test", "v=DMARC1; p=reject; pct=0")
    send(server, message("pctq.test"), "x@pctq.test")  # quarantine not applied: inbox
    send(server, message("pctr.test"), "x@pctr.test")  # reject not applied: quarantine
    (inbox,) = stored(server)
    assert b"dmarc=fail reason=sampled_out header.from=pctq.test" in inbox
    (junk,) = stored(server, ".Junk")
    assert b"header.from=pctr.test" in junk


def test_not_exactly_one_from_is_permerror_or_refused_when_asked(tmp_path: Path) -> None:
    two_froms = b"From: a@x.test\r\n" + message("y.test")
    dns = DNSSettings(servers=(f"127.0.0.1:{dns_zone()[1]}",))
    for strict in (False, True):
        options = {SPF: {"results": SPF_PASS}, "dmarc": {"reject_malformed_from": strict}}
        filters = FilterSettings(chain=(SPF, "dkim", "dmarc"), options=options)
        with running_server(tmp_path / str(strict), filters=filters, dns=dns) as srv:
            if strict:
                with pytest.raises(smtplib.SMTPDataError) as e:
                    send(srv, two_froms, "x@y.test")
                assert e.value.smtp_code == 550 and b"exactly one From" in e.value.smtp_error
            else:
                send(srv, two_froms, "x@y.test")
                (kept,) = stored(srv)
                assert b"dmarc=permerror" in kept


def reporter(srv: RunningServer) -> Reporter:
    """A reporter on the server's result store and queue, as a second process would have."""
    path = srv.data / "filters" / "dmarc" / "results.sqlite"
    assert path.exists()
    resolver = make_resolver([f"127.0.0.1:{dns_zone()[1]}"])
    return Reporter(
        ResultStore(path),
        srv.server.queue,
        resolver,
        reactor,
        "mail.example.test",
        "postmaster@example.test",
    )


def queued(srv: RunningServer, qid: str) -> bytes:
    (path,) = srv.data.rglob(f"messages/{qid}")
    return path.read_bytes()


def undeliverable(*domains: str) -> None:
    """The queue's delivery of a report to ``domains`` waits on DNS that never answers, so
    the report stays queued for the test to read."""
    zone, _ = dns_zone()
    for domain in domains:
        zone.set_silent(domain, TXT)


def test_aggregate_report_is_queued_with_the_counts(server: RunningServer) -> None:
    setup_domain("reported.test", "v=DMARC1; p=none; rua=mailto:dmarc@reported.test!10m")
    undeliverable("reported.test")
    signed = sign(message("reported.test"), "reported.test", "sel")
    for _ in range(2):
        send(server, signed, "x@reported.test")
    send(server, message("reported.test"), "x@reported.test")
    (qid,) = blockingCallFromThread(reactor, reporter(server).send_now)
    report = email.message_from_bytes(queued(server, qid))
    assert report["To"] == "dmarc@reported.test"
    (part,) = [p for p in report.walk() if p.get_filename()]
    assert part.get_filename().startswith("mail.example.test!reported.test!")
    feedback = etree.fromstring(gzip.decompress(part.get_payload(decode=True)))
    counts = {
        r.findtext("row/policy_evaluated/dkim"): int(r.findtext("row/count"))
        for r in feedback.findall("record")
    }
    assert counts == {"pass": 2, "fail": 1}
    assert feedback.findtext("policy_published/domain") == "reported.test"
    # reported rows are gone: nothing more to send
    assert blockingCallFromThread(reactor, reporter(server).send_now) == []


def test_external_destinations_must_agree(server: RunningServer) -> None:
    zone, _ = dns_zone()
    setup_domain("outsourced.test", "v=DMARC1; p=none; rua=mailto:r@reports-ext.test")
    undeliverable("reports-ext.test")
    send(server, message("outsourced.test"), "x@outsourced.test")
    sender = reporter(server)
    assert blockingCallFromThread(reactor, sender.send_now) == []  # no record: refused
    zone.set_txt("outsourced.test._report._dmarc.reports-ext.test", [b"v=DMARC1"])
    send(server, message("outsourced.test"), "x@outsourced.test")
    (qid,) = blockingCallFromThread(reactor, sender.send_now)
    assert b"To: r@reports-ext.test" in queued(server, qid)


def test_a_report_over_the_size_limit_is_not_sent(server: RunningServer) -> None:
    setup_domain("tiny.test", "v=DMARC1; p=none; rua=mailto:r@tiny.test!1k")
    send(server, message("tiny.test"), "x@tiny.test")
    assert blockingCallFromThread(reactor, reporter(server).send_now) == []


def evaluate(tmp_path: Path, domain: str, notes: dict[str, Any], port: int = 0) -> Any:
    env = FilterEnvironment(
        resolver=make_resolver([f"127.0.0.1:{port or dns_zone()[1]}"]),
        reactor=reactor,
        hostname="mx.test",
        domains=("example.test",),
        state_dir=tmp_path,
    )
    check = factory.build({"reports": False, "dns_timeout": 1}, env)
    context = MailContext("192.0.2.1", content=message(domain), notes=notes)
    return blockingCallFromThread(reactor, check.check, "data", context)


def test_a_trusted_forwarders_arc_chain_overrides_a_failure(tmp_path: Path) -> None:
    setup_domain("forwarded.test", "v=DMARC1; p=reject")
    refused = evaluate(tmp_path, "forwarded.test", {"arc": {"result": "pass", "trusted": False}})
    assert refused.action == "reject"
    verdict = evaluate(tmp_path, "forwarded.test", {"arc": {"result": "pass", "trusted": True}})
    assert verdict.action == "accept"
    (result,) = verdict.results
    assert (result.result, result.reason) == ("fail", "trusted_forwarder")


def test_l_policy_signatures_do_not_count(tmp_path: Path) -> None:
    setup_domain("length.test", "v=DMARC1; p=reject")
    notes = {"dkim": [{"result": "policy", "domain": "length.test", "selector": "sel"}]}
    assert evaluate(tmp_path, "length.test", notes).action == "reject"
    notes = {"dkim": [{"result": "pass", "domain": "length.test", "selector": "sel"}]}
    assert evaluate(tmp_path, "length.test", notes).action == "accept"


def test_a_silent_dns_server_is_temperror_and_delivers(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        verdict = evaluate(tmp_path, "slow.test", {}, silent.getsockname()[1])
    assert verdict.action == "accept" and verdict.results[0].result == "temperror"


@attrs.define
class FakeQueue:
    """An IOutboundQueue that keeps what it is given."""

    queued: list[tuple[str, list[str], bytes]] = attrs.Factory(list)

    def enqueue(self, sender: str, recipients: Any, content: bytes, *args: Any) -> Any:
        self.queued.append((sender, [a for a, _ in recipients], content))
        return succeed(f"q{len(self.queued)}")

    def report_delivered(self, *args: Any) -> Any:
        return succeed(None)


def test_reports_go_out_once_an_interval(tmp_path: Path) -> None:
    setup_domain("daily.test", "v=DMARC1; p=none; rua=mailto:agg@daily.test")
    queue = FakeQueue()
    resolver = make_resolver([f"127.0.0.1:{dns_zone()[1]}"])
    store = ResultStore(tmp_path / "r.sqlite", limit=2)
    sender = Reporter(store, queue, resolver, reactor, "mx.test", "pm@mx.test", interval=0.5)
    row = {"record": {}, "policy": {}, "rua": [{"address": "agg@daily.test", "limit": 0}]}
    results = [blockingCallFromThread(reactor, sender.record, "daily.test", row) for _ in range(3)]
    assert results == [None] * 3 and len(store.pending()["daily.test"]) == 2  # the limit
    store.forget("daily.test", 10**9)
    check = DMARCCheck(resolver, reactor, sender)
    context = MailContext("192.0.2.7", "smtp", sender="x@daily.test", content=message("daily.test"))
    blockingCallFromThread(reactor, check.check, "data", context)
    blockingCallFromThread(reactor, sender.start)
    try:
        deadline = time.monotonic() + 5
        while not queue.queued and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        blockingCallFromThread(reactor, sender.stop)
    ((frm, to, content),) = queue.queued  # the first tick only starts the day
    assert (frm, to) == ("pm@mx.test", ["agg@daily.test"])
    assert b"Report Domain: daily.test" in content


@pytest.mark.parametrize(
    "records",
    [
        ["v=DMARC1; p=reject", "v=DMARC1; p=none"],  # two: no policy (RFC 7489 6.6.3)
        ["v=DMARC1; p=nonsense"],
        ["v=DMARC1; p=reject; " + "x" * 5000],  # over MAX_RECORD: ignored
        ["p=reject"],
    ],
)
def test_unusable_records_mean_no_policy(tmp_path: Path, records: list[str]) -> None:
    zone, _ = dns_zone()
    zone.set_txt(
        "_dmarc.unusable.test",
        *[[r[i : i + 255].encode() for i in range(0, len(r), 255)] for r in records],
    )
    verdict = evaluate(tmp_path, "unusable.test", {})
    assert verdict.action == "accept" and verdict.results[0].result == "none"


@pytest.mark.parametrize(
    "options",
    [
        {"bogus": 1},
        {"dns_timeout": 0},
        {"report_interval": 1},
        {"report_from": "nobody"},
        {"reports": "yes"},
        {"max_results": 0},
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    env = FilterEnvironment(None, reactor, "mx.test", (), tmp_path)
    with pytest.raises(ValueError):
        factory.build(options, env)


@pytest.mark.parametrize(("draw", "action"), [(0.49, "reject"), (0.5, "junk")])
def test_pct_samples_with_the_injected_random(tmp_path: Path, draw: float, action: str) -> None:
    setup_domain("half.test", "v=DMARC1; p=reject; pct=50")
    resolver = make_resolver([f"127.0.0.1:{dns_zone()[1]}"])
    check = DMARCCheck(resolver, reactor, sample=lambda: draw)
    context = MailContext("192.0.2.1", content=message("half.test"))
    assert blockingCallFromThread(reactor, check.check, "data", context).action == action
