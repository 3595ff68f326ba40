"""TLS-RPT (ourmail/queue/tlsrpt.py): the rua record (RFC 8460 §3), the JSON report (§4.4),
the message it travels in (§5.3), and the durable record of sessions."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import dns_zone
from storehelp import on_reactor
from twisted.internet import defer
from twisted.names import client, dns

from ourmail.queue.tlsrpt import Outcome, TLSReports, build_report, parse_rua, report_message

DAY = 86400
NOW = 20000 * DAY + 3600  # 2024-10-04, 01:00 UTC


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["v=TLSRPTv1; rua=mailto:tls@e.test"], ["tls@e.test"]),
        (
            ["v=TLSRPTv1;rua=mailto:a@e.test,mailto:b%40x@e.test?subject=x"],
            ["a@e.test", "b@x@e.test"],
        ),
        (["v=TLSRPTv1; rua=https://reports.e.test/v1"], []),
        (["v=TLSRPTv1; rua=mailto:a@e.test", "v=TLSRPTv1; rua=mailto:b@e.test"], []),
        (["v=TLSRPTv2; rua=mailto:a@e.test"], []),
        (["v=TLSRPTv1; rua=mailto:<evil>@e.test"], []),
        (
            ["v=TLSRPTv1; rua=" + ",".join(f"mailto:r{n}@e.test" for n in range(9))],
            [f"r{n}@e.test" for n in range(5)],
        ),
    ],
)
def test_rua(texts: list[str], expected: list[str]) -> None:
    assert parse_rua(texts) == expected


def test_report_counts_per_policy_and_failure() -> None:
    sts = ("sts", ("version: STSv1", "mode: enforce", "mx: *.e.test"), ("*.e.test",))
    outcomes = [
        Outcome("e.test", True, *sts),
        Outcome("e.test", True, *sts),
        Outcome("e.test", False, *sts, "starttls-not-supported", "mx1.e.test", "192.0.2.1"),
        Outcome("e.test", False, *sts, "starttls-not-supported", "mx1.e.test", "192.0.2.1"),
        Outcome("e.test", False, *sts, "certificate-expired", "mx2.e.test"),
        Outcome("e.test", False, "sts", result_type="sts-policy-fetch-error"),
    ]
    report = build_report("e.test", "2024-10-03", outcomes, "mail.us.test", "postmaster@us.test")
    assert report["date-range"] == {
        "start-datetime": "2024-10-03T00:00:00Z",
        "end-datetime": "2024-10-03T23:59:59Z",
    }
    assert report["report-id"].startswith("2024-10-03.")
    first, second = report["policies"]
    assert first["policy"] == {
        "policy-type": "sts",
        "policy-domain": "e.test",
        "policy-string": ["version: STSv1", "mode: enforce", "mx: *.e.test"],
        "mx-host": ["*.e.test"],
    }
    assert first["summary"] == {
        "total-successful-session-count": 2,
        "total-failure-session-count": 3,
    }
    assert first["failure-details"] == [
        {
            "result-type": "starttls-not-supported",
            "failed-session-count": 2,
            "receiving-mx-hostname": "mx1.e.test",
            "receiving-ip": "192.0.2.1",
        },
        {
            "result-type": "certificate-expired",
            "failed-session-count": 1,
            "receiving-mx-hostname": "mx2.e.test",
        },
    ]
    assert second["policy"] == {"policy-type": "sts", "policy-domain": "e.test"}
    assert second["failure-details"][0]["result-type"] == "sts-policy-fetch-error"
    json.dumps(report)  # JSON all the way down


def test_report_message() -> None:
    report = build_report(
        "e.test", "2024-10-03", [Outcome("e.test", True)], "us.test", "pm@us.test"
    )
    raw = report_message(report, "e.test", "us.test", "pm@us.test", ["tls@e.test"])
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert (
        msg["Subject"]
        == f"Report Domain: e.test Submitter: us.test Report-ID: <{report['report-id']}>"
    )
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    (part,) = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert part.get_filename() == "us.test!e.test!1727913600!1727999999.json.gz"
    assert json.loads(gzip.decompress(part.get_payload(decode=True))) == report


def test_record_survives_a_torn_line(tmp_path: Path) -> None:
    reports = TLSReports(tmp_path / "tlsrpt", "us.test", "pm@us.test")
    on_reactor(reports.record, Outcome("e.test", True), NOW - DAY)
    on_reactor(
        reports.record, Outcome("f.test", False, result_type="validation-failure"), NOW - DAY
    )
    on_reactor(reports.record, Outcome("e.test", True), NOW)  # today: not finished
    (path,) = [p for p in (tmp_path / "tlsrpt").glob("*.jsonl") if p.stem < "2024-10-04"]
    with path.open("ab") as f:
        f.write(b'{"domain": "e.te')  # a crash in the middle of a line
    days = reports.finished_days(NOW)
    assert list(days) == ["2024-10-03"]
    assert {d: len(o) for d, o in days["2024-10-03"].items()} == {"e.test": 1, "f.test": 1}
    assert days["2024-10-03"]["f.test"][0].result_type == "validation-failure"


def test_send_keeps_a_day_while_dns_fails(tmp_path: Path) -> None:
    zone, port = dns_zone()
    zone.set_records(
        "_smtp._tls.e.test", dns.TXT, dns.Record_TXT(b"v=TLSRPTv1; rua=mailto:r@e.test", ttl=0)
    )
    reports = TLSReports(tmp_path / "tlsrpt", "us.test", "pm@us.test")
    on_reactor(reports.record, Outcome("e.test", True), NOW - DAY)
    queued: list[tuple[str, list[str], bytes]] = []

    def enqueue(sender: str, rcpts: Any, content: bytes, *rest: Any) -> defer.Deferred[str]:
        queued.append((sender, [a for a, _ in rcpts], content))
        return defer.succeed("qid")

    def send(dns_port: int) -> int:
        resolver = client.Resolver(servers=[("127.0.0.1", dns_port)], timeout=(1,))
        return on_reactor(
            lambda: defer.Deferred.fromCoroutine(reports.send(NOW, resolver, enqueue))
        )

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
            mute.bind(("127.0.0.1", 0))
            assert send(mute.getsockname()[1]) == 0
        assert list(reports.finished_days(NOW)) == ["2024-10-03"]  # kept for the next round
        assert send(port) == 1
        ((sender, rcpts, content),) = queued
        assert (sender, rcpts) == ("", ["r@e.test"]) and b"tlsrpt+gzip" in content
        assert reports.finished_days(NOW) == {}
    finally:
        zone.clear("_smtp._tls.e.test")
