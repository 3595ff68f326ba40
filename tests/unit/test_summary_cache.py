"""Summary records in ``ourmail-cache``: round trip, caches of older formats, damage."""

from __future__ import annotations

import binascii
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storehelp import drop

from ourmail.imap import render
from ourmail.mime import outline
from ourmail.mime.summary import Summary, summarize
from ourmail.store.cache import SummaryCache
from ourmail.store.folder import MaildirFolder
from ourmail.store.maildir import make_maildir

MSG = b'From: "A\tB" <a@b.c>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\n'

#: The cache line of MSG as the code before format 2 wrote it (rendered IMAP, base64) …
BASE64_LINE = (
    b"KE5JTCAiPT91dGYtOD9xP2NhZj1DMz1BOT89IiAoKCJBCUIiIE5JTCAiYSIgImIuYyIpKSAoKCJBCUIiIE5JTCAi"
    b"YSIgImIuYyIpKSAoKCJBCUIiIE5JTCAiYSIgImIuYyIpKSBOSUwgTklMIE5JTCBOSUwgTklMKQ=="
    b"\tKCJURVhUIiAiUExBSU4iICgiQ0hBUlNFVCIgInVzLWFzY2lpIikgTklMIE5JTCAiN0JJVCIgNiAxIE5JTCBOSUwg"
    b"TklMIE5JTCk=\tKCJURVhUIiAiUExBSU4iICgiQ0hBUlNFVCIgInVzLWFzY2lpIikgTklMIE5JTCAiN0JJVCIgNiAxKQ=="
    b'\t{"from":"\\"A B\\" <a@b.c>","subject":"caf\\u00e9"}'
)
#: … and as the code before that wrote it (one JSON object).
JSON_LINE = (
    b'{"e": "(NIL \\"=?utf-8?q?caf=C3=A9?=\\" ((\\"A\\tB\\" NIL \\"a\\" \\"b.c\\")) ((\\"A\\tB\\" '
    b'NIL \\"a\\" \\"b.c\\")) ((\\"A\\tB\\" NIL \\"a\\" \\"b.c\\")) NIL NIL NIL NIL NIL)", '
    b'"s": "(\\"TEXT\\" \\"PLAIN\\" (\\"CHARSET\\" \\"us-ascii\\") NIL NIL \\"7BIT\\" 6 1 NIL NIL '
    b'NIL NIL)", "b": "(\\"TEXT\\" \\"PLAIN\\" (\\"CHARSET\\" \\"us-ascii\\") NIL NIL \\"7BIT\\" 6 '
    b'1)", "h": {"from": "\\"A B\\" <a@b.c>", "subject": "caf\\u00e9"}}'
)

_word = st.text(max_size=8)
_text = st.none() | _word
_address = st.builds(outline.Address, _text, _text, _text)
_addresses = st.none() | st.lists(_address, max_size=2).map(tuple)
_envelopes = st.builds(outline.Envelope, _text, _text, *[_addresses] * 6, _text, _text)
_params = st.lists(st.tuples(_word, _word), max_size=2).map(tuple)
_leaves = st.builds(
    outline.BodyPart,
    _word,
    _word,
    _params,
    _text,
    _text,
    _word,
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    _text,
    st.none() | st.builds(outline.Disposition, _word, _params),
)
_bodies = st.recursive(
    _leaves,
    lambda inner: (
        st.builds(outline.BodyPart, _word, _word, children=st.lists(inner, max_size=3).map(tuple))
        | st.builds(
            outline.BodyPart,
            st.just("message"),
            st.just("rfc822"),
            message=st.tuples(_envelopes, inner),
        )
    ),
    max_leaves=4,
)


# 25 examples, not hypothesis's 100: the nested bodies are slow to draw (22 s for 100), and
# many drawn are filtered out.
@settings(
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(_envelopes, _bodies, st.dictionaries(_word, st.text()))
def test_record_round_trip(
    envelope: outline.Envelope, body: outline.BodyPart, headers: dict[str, str]
) -> None:
    record = Summary.of(envelope, body, headers).to_record()
    assert b"\n" not in record and record.count(b"\t") == 3
    again = Summary.from_record(record)
    assert (again.envelope, again.body, again.headers) == (envelope, body, headers)


def test_records_of_older_formats_are_refused() -> None:
    for line in (BASE64_LINE, JSON_LINE):
        try:
            Summary.from_record(line)
        except ValueError:
            continue
        raise AssertionError(f"read an old record: {line[:20]!r}")


def test_a_folder_with_an_old_cache_summarises_again(tmp_path: Path) -> None:
    """After an upgrade, each message with a summary of an older format is summarised from its
    file once (the new record is appended), and renders as the old code rendered it."""
    make_maildir(tmp_path)
    for name in ("1.a.host", "2.b.host"):
        drop(tmp_path, MSG, name=name)
    folder = MaildirFolder(tmp_path, "INBOX")
    folder.sync()
    one, two = folder.uids()
    old = b"%d\t%s\n%d\t%s\n" % (one, BASE64_LINE, two, JSON_LINE)
    (tmp_path / "ourmail-cache").write_bytes(old)
    upgraded = MaildirFolder(tmp_path, "INBOX")
    upgraded.sync()
    rendered = binascii.a2b_base64(BASE64_LINE.split(b"\t")[0])
    for uid in (one, two):
        summary = upgraded.message(uid).summary()
        assert render.summary_envelope(summary) == rendered
        assert summary.headers["subject"] == "café"
    data = (tmp_path / "ourmail-cache").read_bytes()
    assert data.startswith(old) and data.count(b"\t2\t[") == 2
    assert SummaryCache(tmp_path).get(one) == summarize(MSG)


def test_damaged_records_read_as_missing(tmp_path: Path) -> None:
    good = summarize(MSG).to_record()
    lines = [
        b"1\t" + good[:20] + b"2\t" + good,  # a torn append merged with the next line
        b"3\t2\t!!!\t!!!\t{}",
        b"4\t" + good[:-1],  # headers cut short
        b"5\t" + good,
    ]
    (tmp_path / "ourmail-cache").write_bytes(b"\n".join(lines) + b"\n")
    cache = SummaryCache(tmp_path)
    assert [cache.get(uid) is None for uid in (1, 3, 4, 5)] == [True, True, True, False]
    assert cache.get(5).headers["subject"] == "café"  # type: ignore[union-attr]
