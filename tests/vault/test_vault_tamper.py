"""``vault verify`` names each kind of tampering (issue 18, the tamper tests): a vault of 12
messages (21 records over 4 small segments) is changed on disk one way per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from vaultrulehelp import LOCAL, Vault

from ourmail.vault.segments import SegmentLog
from ourmail.vault.verify import Report, verify
from tests.vault.proofhelp import EPOCH, build, remove_content, where

DAY = 86400.0
T0 = 1_800_000_000.0
#: The rule of the legitimate expiries below, as expiry writes it into its record.
ONE_DAY = [{"scope": "default", "keep_days": 1}]


@pytest.fixture
def log(tmp_path: Path) -> SegmentLog:
    return build(tmp_path / "vault")


def rewrite(log: SegmentLog, segment: int, change: bytes) -> None:
    log.path_of(segment).write_bytes(change)


def texts(report: Report) -> list[str]:
    return [p.text for p in report.problems]


def test_a_clean_vault_verifies(log: SegmentLog) -> None:
    report = verify(log)
    assert report.ok, texts(report)
    assert (report.records, report.segments, report.last[0]) == (21, 4, 21)
    assert report.octets == sum(p.stat().st_size for _, p in log.segments())


def test_a_flipped_byte_in_a_meta(log: SegmentLog) -> None:
    segment, start, _ = where(log, 9)
    data = bytearray(log.path_of(segment).read_bytes())
    at = data.index(b"clerk", start)
    data[at] ^= 0x01
    rewrite(log, segment, bytes(data))
    assert texts(verify(log)) == [
        f"record 9 (segment {segment}, offset {start}) changed: its hash does not match"
    ]


def test_a_changed_hash_in_a_frame(log: SegmentLog) -> None:
    segment, start, _ = where(log, 9)
    data = bytearray(log.path_of(segment).read_bytes())
    data[start + 2] = ord("f") if data[start + 2] != ord("f") else ord("e")
    rewrite(log, segment, bytes(data))
    assert texts(verify(log)) == [
        f"record 9 (segment {segment}, offset {start}) changed: its hash does not match"
    ]


def test_a_flipped_byte_in_content(log: SegmentLog) -> None:
    segment, start, end = where(log, 8)
    data = bytearray(log.path_of(segment).read_bytes())
    data[end - 10] ^= 0x01
    rewrite(log, segment, bytes(data))
    (problem,) = verify(log).problems
    assert problem.text.startswith(
        f"record 8's content (segment {segment}, offset {start}) does not match its sha256"
    )


def test_a_removed_record(log: SegmentLog) -> None:
    segment, start, end = where(log, 9)
    data = log.path_of(segment).read_bytes()
    rewrite(log, segment, data[:start] + data[end:])
    assert texts(verify(log)) == ["record 9 missing between 8 and 10"]


def test_a_swapped_pair_of_records(log: SegmentLog) -> None:
    segment, a, b = where(log, 8)
    _, b2, c = where(log, 9)
    assert b == b2
    data = log.path_of(segment).read_bytes()
    rewrite(log, segment, data[:a] + data[b:c] + data[a:b] + data[c:])
    assert texts(verify(log)) == ["records 8 and 9 out of order"]


def test_a_segment_truncated_mid_frame(log: SegmentLog) -> None:
    segment, start, _ = where(log, 9)
    data = log.path_of(segment).read_bytes()
    rewrite(log, segment, data[: start + 40])
    problems = texts(verify(log))
    assert f"segment {segment} truncated at offset {start} after record 8" in problems
    assert any(p.startswith("records 9 to ") for p in problems)


def test_a_last_segment_truncated_at_a_frame_boundary_is_caught_by_the_head(
    log: SegmentLog,
) -> None:
    segment, start, _ = where(log, 21)
    assert segment == log.segments()[-1][0]
    rewrite(log, segment, log.path_of(segment).read_bytes()[:start])
    assert texts(verify(log)) == ["head names record 21, but the last record is 20"]


def test_a_removed_middle_segment(log: SegmentLog) -> None:
    log.path_of(2).unlink()
    problems = texts(verify(log))
    assert problems[0] == "segment 2 missing"
    assert problems[1].startswith(
        "segment 3's header does not follow segment 1: it starts at record 12"
    )
    assert problems[2:] == ["records 7 to 11 missing between 6 and 12"]


def test_an_edited_head(log: SegmentLog) -> None:
    seq, digest = log.head()
    (log.root / "head").write_text(f"{seq} {'0' * 64}\n")
    report = verify(log)
    assert [p.kind for p in report.problems] == ["head"]
    assert report.problems[0].text.startswith("head names record 21 with hash 000000000000")


def expire(log: SegmentLog, records: list[int], rule: object = ONE_DAY) -> int:
    """Append an ``expire`` record two days after the captures (the content is not removed)."""
    with log.locked():
        item = ("expire", {"records": records, "rule": rule, "reason": "retention"}, None)
        return log.append([item], EPOCH + 2 * DAY)[0][1].seq


def keep_one_day(log: SegmentLog) -> None:
    with log.locked():
        rule = ("rule", {"scope": "default", "keep_days": 1, "by": "admin"}, None)
        log.append([rule], EPOCH + 100)


def test_expired_content_named_by_an_expire_record_verifies(log: SegmentLog) -> None:
    keep_one_day(log)
    remove_content(log, 13)
    remove_content(log, 12)
    expire(log, [12, 13])
    report = verify(log)
    assert report.ok, texts(report)


def test_a_forged_expire_of_held_mail_is_caught(log: SegmentLog) -> None:
    """/tmp/review-rules/forge.py: an expire record no rule justified, of held mail."""
    with log.locked():
        hold = {"name": "case", "reason": "lawsuit", "by": "admin"}
        log.append([("hold", dict(hold, scope={"domain": "town.example"}), None)], EPOCH + 100)
    remove_content(log, 2)
    seq = expire(log, [2], [{"scope": "default", "keep_days": 0}])
    assert texts(verify(log)) == [
        f"expire record {seq} names the rule default=0 days, which was not in force then",
        f"expire record {seq} removed record 2, which rule default=forever kept forever",
        f"expire record {seq} removed record 2, which hold case (domain town.example) covered",
    ]


def test_a_forged_rule_that_expires_at_once_is_caught(log: SegmentLog) -> None:
    with log.locked():
        rule = ("rule", {"scope": "default", "keep_days": 0, "by": "admin"}, None)
        rule_seq = log.append([rule], EPOCH + 100)[0][1].seq
    segment, start, _ = where(log, rule_seq)
    remove_content(log, 2)
    expire(log, [2], [{"scope": "default", "keep_days": 0}])
    assert texts(verify(log)) == [
        f"rule record {rule_seq} (segment {segment}, offset {start}) keeps mail 0 days"
    ]


def test_an_expire_record_must_follow_the_rules_and_the_shared_bodies(
    log: SegmentLog,
) -> None:
    keep_one_day(log)
    with log.locked():
        rule = ("rule", {"scope": "user:council@town.example", "keep_days": 30, "by": "a"}, None)
        log.append([rule], EPOCH + 200)
    seq = expire(log, [1, 13, 22])  # a blob record 2 uses, a capture kept 30 days, a rule
    assert texts(verify(log)) == [
        f"expire record {seq} removed record 1, the body of record 2, which was not expired then",
        f"expire record {seq} removed record 13, which rule user:council@town.example=30 "
        "days kept until 2026-06-27 20:26 UTC",
        f"expire record {seq} removed record 22, which is a rule, not a message",
    ]


def test_absent_content_without_an_expire_record_does_not(log: SegmentLog) -> None:
    segment, start, _ = where(log, 13)
    remove_content(log, 13)
    assert texts(verify(log)) == [
        f"record 13's content (segment {segment}, offset {start}) is absent, and no expire record names it"
    ]


def test_a_damaged_frame_is_passed_over_and_the_rest_checked(log: SegmentLog) -> None:
    segment, start, end = where(log, 9)
    data = bytearray(log.path_of(segment).read_bytes())
    data[start] = ord("X")
    rewrite(log, segment, bytes(data))
    assert texts(verify(log)) == [
        f"segment {segment} damaged at offset {start} after record 8: no record frame at "
        f"offset {start}; up to offset {end} cannot be read",
        "record 9 missing between 8 and 10",
    ]


def test_a_legitimate_expiry_verifies(tmp_path: Path) -> None:
    """The rules tests' scenario: a rule, a hold, a shared body, expired twice."""
    vault = Vault(tmp_path / "vault")
    vault.rule(T0, "domain:org.test", 30)
    vault.hold(T0, "case", {"user": "carol@org.test"})
    old = vault.capture(T0, "x@else.test", "bob@org.test", "old", b"same body\r\n")
    vault.capture(T0, "x@else.test", "carol@org.test", "held", b"held body\r\n")
    vault.capture(T0 + 20 * DAY, "x@else.test", "bob@org.test", "new", b"same body\r\n")
    assert vault.expire(T0 + 40 * DAY).plan.captures == (old,)
    assert vault.expire(T0 + 60 * DAY).plan.blobs == (old - 1,)
    report = verify(vault.log, local_domains=LOCAL)
    assert report.ok, texts(report)


@pytest.mark.parametrize("damage", [b"retention", b'"records"'])
def test_a_damaged_expire_record_is_one_problem(log: SegmentLog, damage: bytes) -> None:
    """Its names still count: the content it removed is not also reported as absent."""
    keep_one_day(log)
    remove_content(log, 13)
    remove_content(log, 12)
    seq = expire(log, [12, 13])
    segment, start, _ = where(log, seq)
    data = bytearray(log.path_of(segment).read_bytes())
    data[data.index(damage, start) + 1] ^= 0x01
    rewrite(log, segment, bytes(data))
    assert texts(verify(log)) == [
        f"record {seq} (segment {segment}, offset {start}) changed: its hash does not match; "
        "it looks like an expire record naming 2 records"
    ]
