"""Charsets and RFC 2047 words (ourmail/web/charsets.py): Greek reads right whatever the
label, and no label or octet raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ourmail.web.charsets import codec_for, decode_text, decode_words, header_text

GREEK = "Καλημέρα σας, Άρτεμις"


@pytest.mark.parametrize("charset", ["iso-8859-7", "windows-1253", "utf-8", "ISO_8859-7"])
def test_greek_in_its_declared_charset(charset: str) -> None:
    text, _ = decode_text(GREEK.encode(charset.replace("_", "-")), charset)
    assert text == GREEK


def test_the_two_greek_charsets_differ_on_alpha_with_tonos() -> None:
    # Ά is 0xB6 in ISO-8859-7 and 0xA2 in Windows-1253: each label is honoured.
    assert decode_text(b"\xb6", "iso-8859-7")[0] == "Ά"
    assert decode_text(b"\xa2", "windows-1253")[0] == "Ά"


def test_utf8_under_a_single_byte_label_is_utf8() -> None:
    assert decode_text(GREEK.encode(), "iso-8859-7") == (GREEK, "utf-8")


def test_a_utf8_label_on_greek_octets_falls_back() -> None:
    text, codec = decode_text(GREEK.encode("windows-1253"), "utf-8", fallback="windows-1253")
    assert (text, codec) == (GREEK, "cp1253")


@pytest.mark.parametrize("label", [None, "", "x-unknown", "us-ascii", "utf-7", "rot13", "base64"])
def test_unknown_ascii_or_refused_labels_use_the_fallback(label: str | None) -> None:
    text, codec = decode_text(GREEK.encode("windows-1253"), label, fallback="windows-1253")
    assert (text, codec) == (GREEK, "cp1253")


def test_utf7_is_never_decoded() -> None:
    # UTF-7 would turn "+ADw-script+AD4-" into "<script>" past an HTML filter.
    assert codec_for("utf-7") is None
    assert "<script>" not in decode_text(b"+ADw-script+AD4-", "utf-7")[0]


def test_encoded_words_b_and_q_and_split_characters() -> None:
    subject = "=?UTF-8?B?zprOsc67?= =?UTF-8?Q?=CE=B7=CE=BC=CE?= =?UTF-8?Q?=AD=CF=81=CE=B1?="
    assert decode_words(subject) == "Καλημέρα"
    assert decode_words("=?iso-8859-7?q?=C3=E5=E9=DC_=F3=EF=F5?=") == "Γειά σου"
    assert decode_words("=?windows-1253?B?wuHx3OI=?=") == "Βαράβ"
    assert decode_words("Re: =?utf-8?q?caf=C3=A9?= ok") == "Re: café ok"


def test_encoded_word_with_language_and_bad_pieces() -> None:
    assert decode_words("=?UTF-8*el?Q?=CE=B1?=") == "α"
    assert decode_words("=?x-nothing?Q?abc?=") == "abc"
    assert decode_words("=?UTF-8?B?###?=") == ""


def test_raw_8bit_header_uses_the_hint_then_utf8() -> None:
    raw = GREEK.encode("iso-8859-7").decode("utf-8", "surrogateescape")
    assert header_text(raw, "iso-8859-7") == GREEK
    assert header_text(GREEK, None) == GREEK  # RFC 6532: UTF-8 as it is


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([None, "utf-8", "iso-8859-7", "x", "utf-16"]))
def test_any_octets_decode_to_encodable_text(data: bytes, label: str | None) -> None:
    text, _ = decode_text(data, label)
    text.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_header_decodes_to_encodable_text(value: str) -> None:
    header_text(value).encode("utf-8")
    decode_words("=?utf-8?b?" + value + "?=").encode("utf-8")
