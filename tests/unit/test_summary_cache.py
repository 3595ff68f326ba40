"""Summary records in ``ourmail-cache``: round trip, the JSON lines of older caches, damage."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ourmail.mime.summary import Summary, summarize
from ourmail.store.cache import SummaryCache

MSG = b'From: "A\tB" <a@b.c>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\n'


@given(st.binary(), st.binary(), st.binary(), st.dictionaries(st.text(), st.text()))
def test_record_round_trip(e: bytes, s: bytes, b: bytes, h: dict[str, str]) -> None:
    record = Summary(e, s, b, h).to_record()
    assert b"\n" not in record and record.count(b"\t") == 3
    assert Summary.from_record(record) == Summary(e, s, b, h)


def test_an_old_json_line_is_still_read(tmp_path: Path) -> None:
    summary = summarize(MSG)
    old = {
        "e": summary.envelope.decode("latin-1"),
        "s": summary.bodystructure.decode("latin-1"),
        "b": summary.body.decode("latin-1"),
        "h": summary.headers,
    }
    (tmp_path / "ourmail-cache").write_text(f"7\t{json.dumps(old)}\n")
    assert SummaryCache(tmp_path).get(7) == summary


def test_damaged_records_read_as_missing(tmp_path: Path) -> None:
    good = summarize(MSG).to_record()
    lines = [
        b"1\t" + good[:20] + b"2\t" + good,  # a torn append merged with the next line
        b"3\t!!!\t!!!\t!!!\t{}",
        b"4\t" + good[:-1],  # headers cut short
        b"5\t" + good,
    ]
    (tmp_path / "ourmail-cache").write_bytes(b"\n".join(lines) + b"\n")
    cache = SummaryCache(tmp_path)
    assert [cache.get(uid) is None for uid in (1, 3, 4, 5)] == [True, True, True, False]
    assert cache.get(5).headers["subject"] == "café"  # type: ignore[union-attr]
