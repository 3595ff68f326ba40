"""DMARC records, organisational domains, alignment, the From: domain (RFC 7489) and the
aggregate report's XML (Appendix C)."""

from __future__ import annotations

import email
import gzip
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from ourmail.filters.dmarc import from_domain
from ourmail.filters.dmarcpolicy import (
    Policy,
    ReportURI,
    aligned,
    organizational_domain,
    parse_record,
    parse_rua,
)
from ourmail.filters.dmarcreport import ResultStore, build_report, report_message


def test_organizational_domains_come_from_the_public_suffix_list() -> None:
    assert organizational_domain("mail.example.org") == "example.org"
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("co.uk") == "co.uk"
    assert aligned("news.example.org", "example.org", strict=False)
    assert not aligned("news.example.org", "example.org", strict=True)
    assert not aligned("example.co.uk", "other.co.uk", strict=False)


def test_records_are_parsed_as_rfc_7489_says() -> None:
    policy = parse_record(
        "v=DMARC1; p=reject; sp=quarantine; adkim=s; pct=50; rua=mailto:a@r.test!10m,"
        "https://x.test/, mailto:b@r.test; fo=1; unknown=x",
        "example.org",
    )
    assert policy == Policy(
        "example.org",
        "reject",
        "quarantine",
        "s",
        "r",
        50,
        (ReportURI("a@r.test", 10 << 20), ReportURI("b@r.test")),
    )
    assert parse_record("v=DMARC1; p=none", "x.test").sp == "none"  # sp defaults to p
    assert parse_record("p=reject; v=DMARC1", "x.test") is None  # v= must come first
    assert parse_record("v=DMARC1; p=bogus", "x.test") is None
    assert parse_record("v=DMARC1; p=bogus; rua=mailto:a@x.test", "x.test").p == "none"
    assert parse_record("v=DMARC1; p=reject; pct=500", "x.test").pct == 100
    assert parse_rua("mailto:bad, mailto:a@x.test!9x, mailto:c@x.test!2k") == (
        ReportURI("c@x.test", 2048),
    )


@pytest.mark.parametrize(
    ("head", "domain"),
    [
        (b"From: Bob <bob@Example.ORG>\r\n", "example.org"),
        (b"From: bob@example.org\r\nFrom: eve@evil.test\r\n", None),
        (b"From: bob@example.org, eve@evil.test\r\n", None),
        (b"To: x@y.test\r\n", None),
        (b"From: undisclosed\r\n", None),
        (b"From: =?utf-8?q?B=C3=B6b?= <bob@example.org>\r\n", "example.org"),
        ("From: bob@b\u00fccher.example\r\n".encode(), "xn--bcher-kva.example"),
        (b"From: bob@[192.0.2.1]\r\n", None),
        (b"From: bob@localhost\r\n", None),
        (b"From: bob@" + b"a" * 70 + b".test\r\n", None),
        # Padding does not hide a From: field (a cap on fields read would).
        (b"X-A: 1\r\n" * 5000 + b"From: ceo@bank.test\r\n", "bank.test"),
        (b"From: a@x.test\r\n" + b"X-A: 1\r\n" * 5000 + b"From: ceo@bank.test\r\n", None),
        (b"From:\r\n bob@folded.test\r\n", "folded.test"),
        (b"FROM : bob@spaced.test\r\n", "spaced.test"),
    ],
)
def test_the_from_domain(head: bytes, domain: str | None) -> None:
    assert from_domain(head + b"\r\n") == domain


def row(ip: str, dkim: str, disposition: str = "none") -> dict[str, object]:
    return {
        "source_ip": ip,
        "disposition": disposition,
        "dkim": dkim,
        "spf": "fail",
        "reason": "",
        "header_from": "example.org",
        "auth_dkim": [{"domain": "example.org", "selector": "s", "result": dkim}],
        "auth_spf": {"domain": "example.org", "scope": "mfrom", "result": "none"},
    }


def test_the_report_groups_rows_and_is_the_rfc_xml(tmp_path: Path) -> None:
    rows = [
        {"record": r}
        for r in (
            row("192.0.2.1", "pass"),
            row("192.0.2.1", "pass"),
            row("192.0.2.9", "fail", "reject"),
        )
    ]
    published = {
        "domain": "example.org",
        "adkim": "r",
        "aspf": "r",
        "p": "reject",
        "sp": "reject",
        "pct": 100,
    }
    xml = build_report(rows, published, "mx.test", "postmaster@mx.test", "id1", 100, 200)
    feedback = etree.fromstring(xml)
    assert feedback.findtext("report_metadata/date_range/begin") == "100"
    assert feedback.findtext("policy_published/p") == "reject"
    records = {
        (r.findtext("row/source_ip"), r.findtext("row/policy_evaluated/disposition")): int(
            r.findtext("row/count")
        )
        for r in feedback.findall("record")
    }
    assert records == {("192.0.2.1", "none"): 2, ("192.0.2.9", "reject"): 1}
    assert feedback.findtext("record/auth_results/spf/scope") == "mfrom"
    mail = report_message(
        "postmaster@mx.test", "d@r.test", "example.org", "mx.test", "id1", 100, 200, xml
    )
    parsed = email.message_from_bytes(mail)
    assert parsed["Subject"] == "Report Domain: example.org Submitter: mx.test Report-ID: <id1>"
    (attachment,) = [p for p in parsed.walk() if p.get_filename()]
    assert attachment.get_filename() == "mx.test!example.org!100!200.xml.gz"
    assert attachment.get_content_type() == "application/gzip"
    assert gzip.decompress(attachment.get_payload(decode=True)) == xml


def test_results_are_kept_until_reported_and_one_process_sends(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    store.add("example.org", 1.0, {"a": 1})
    store.add("example.org", 2.0, {"a": 2})
    store.add("other.test", 3.0, {"a": 3})
    again = ResultStore(tmp_path / "r.sqlite")  # another process
    pending = again.pending()
    assert [r for _, _, r in pending["example.org"]] == [{"a": 1}, {"a": 2}]
    again.forget("example.org", pending["example.org"][0][0])
    assert len(store.pending()["example.org"]) == 1
    assert not store.claim(1000.0, 86400)  # the first tick only sets the day
    assert not again.claim(2000.0, 86400)
    assert store.claim(1000.0 + 86400, 86400)
    assert not again.claim(1000.0 + 86401, 86400)  # the other process sent already


@given(st.binary(max_size=400))
def test_any_from_field_gets_an_answer(value: bytes) -> None:
    domain = from_domain(b"From: " + value.replace(b"\r\n", b" ") + b"\r\n\r\n")
    assert domain is None or domain.isascii()


@given(st.text(max_size=400))
def test_any_record_parses_or_is_none(text: str) -> None:
    policy = parse_record("v=DMARC1; " + text, "example.org")
    assert policy is None or (policy.p in ("none", "quarantine", "reject") and policy.pct >= 0)
