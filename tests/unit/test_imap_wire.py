"""IMAP argument parsing: known forms, and garbage that must only ever give ParseError."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ourmail.imap import fetch
from ourmail.imap.messages import parse_date_time
from ourmail.imap.search import parse_search
from ourmail.imap.sequence import parse_set, resolve_seq, resolve_uid
from ourmail.imap.wire import Atom, ParseError, quote, tokenize


def test_tokenize_forms() -> None:
    toks = tokenize(
        b'a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100>) "q \\"x\\"" \x00', [b"lit"]
    )
    assert toks == [
        "a1",
        "FETCH",
        "1:*",
        ["FLAGS", "BODY.PEEK[HEADER.FIELDS (From To)]<0.100>"],
        b'q "x"',
        b"lit",
    ]
    assert isinstance(toks[0], Atom)


@pytest.mark.parametrize(
    "bad",
    [b"a (", b"a )", b'a "open', b"a [", b'a "bad \\x escape"', b"a \x01", b"a \x00", b"(" * 50],
)
def test_tokenize_rejects(bad: bytes) -> None:
    with pytest.raises(ParseError):
        tokenize(bad, [])


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_tokenize_garbage_only_raises_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        tokenize(data, [b"x"] * data.count(b"\x00"))


def test_sequence_sets() -> None:
    assert resolve_seq(parse_set("1:3,5,*"), 6) == [1, 2, 3, 5, 6]
    assert resolve_seq(parse_set("4:2"), 6) == [2, 3, 4]
    assert resolve_uid(parse_set("5:*"), [1, 2, 3]) == [2]  # RFC 3501 §6.4.8: * is the highest
    assert resolve_uid(parse_set("2:10"), [1, 2, 3, 20]) == [1, 2]
    for bad in ["", "0", "1:", "a", "1,,2", "4294967296", "1:2:3"]:
        with pytest.raises(ParseError):
            parse_set(bad)


def test_fetch_items() -> None:
    atts = fetch.parse_atts(Atom("ALL"))
    assert [a.kind for a in atts] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    (att,) = fetch.parse_atts([Atom("BODY[1.2.HEADER.FIELDS.NOT (x-a b)]<10.20>")])
    assert att.numbers == (1, 2) and att.text == "HEADER.FIELDS.NOT" and att.fields == ("X-A", "B")
    assert att.partial == (10, 20) and not att.peek
    assert att.label == b"BODY[1.2.HEADER.FIELDS.NOT (X-A B)]<10>"
    for bad in ["BODY[MIME]", "BODY[FOO]", "BODY[HEADER.FIELDS]", "NOPE", "BODY[0]", "BODY[1.X]"]:
        with pytest.raises(ParseError):
            fetch.parse_atts(Atom(bad))


@given(st.text(max_size=80))
def test_fetch_garbage_only_raises_parse_error(text: str) -> None:
    with contextlib.suppress(ParseError):
        tokens = tokenize(text.encode("utf-8").replace(b"\x00", b""), [])
        fetch.parse_atts(tokens[0] if tokens else Atom("X"))


def test_search_parse() -> None:
    search = parse_search(
        tokenize(b"OR SEEN NOT (FLAGGED LARGER 10) UID 1:3", []), 5, [1, 2, 3, 4, 5]
    )
    assert callable(search.predicate) and not search.uses_modseq
    assert parse_search(tokenize(b'(MODSEQ "/flags/\\\\draft" all 620)', []), 5, [1]).uses_modseq
    bad_keys = [b"", b"FOO", b"LARGER x", b"BEFORE 31-Foo-2020", b"OR SEEN", b"UID"]
    bad_keys += [b"MODSEQ", b"MODSEQ x", b'MODSEQ "/flags/x" odd 5']
    for bad in bad_keys:
        with pytest.raises(ParseError):
            parse_search(tokenize(bad, []), 5, [1, 2])


def test_date_time() -> None:
    assert parse_date_time("17-Jul-1996 02:44:25 -0700") == 837596665.0
    assert parse_date_time(" 1-Jan-2000 00:00:00 +0000") == 946684800.0
    for bad in ["32-Jul-1996 02:44:25 -0700", "17-Foo-1996 02:44:25 -0700", "yesterday"]:
        with pytest.raises(ParseError):
            parse_date_time(bad)


def test_quote_uses_literals_when_needed() -> None:
    assert quote("plain") == b'"plain"'
    assert quote('a"b\\') == b'"a\\"b\\\\"'
    assert quote("naïve") == b"{6}\r\nna\xc3\xafve"
    assert quote(b"line\r\nbreak").startswith(b"{11}\r\n")
