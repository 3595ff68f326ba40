"""Safe file names and Content-Disposition (ourmail/web/attachments.py, RFC 6266, RFC 8187)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ourmail.web.attachments import (
    MAX_FILENAME,
    content_disposition,
    parse_section,
    safe_filename,
)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("C:\\boot.ini", "boot.ini"),
        ("/etc/shadow", "shadow"),
        ("report\r\nSet-Cookie: x=1.pdf", "report Set-Cookie x=1.pdf"),
        ("a\"b'c.txt", "abc.txt"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),  # a right-to-left override hides .exe
        ("nul\x00l.txt", "null.txt"),
        (".htaccess", "htaccess"),
        ("...", "attachment"),
        ("", "attachment"),
        (None, "attachment"),
        ("CON", "_CON"),
        ("lpt1.txt", "_lpt1.txt"),
        ("Έγγραφο.pdf", "Έγγραφο.pdf"),
        ("Ε\u0301γγραφο.pdf", "Έγγραφο.pdf"),  # NFC
    ],
)
def test_safe_filename(name: str | None, safe: str) -> None:
    assert safe_filename(name) == safe


def test_long_names_keep_their_extension() -> None:
    name = safe_filename("x" * 1000 + ".pdf")
    assert len(name) <= MAX_FILENAME and name.endswith(".pdf")


def test_disposition_ascii() -> None:
    assert content_disposition("report.pdf", inline=False) == 'attachment; filename="report.pdf"'
    assert content_disposition("photo.jpg", inline=True) == 'inline; filename="photo.jpg"'


def test_disposition_greek_has_rfc8187_name() -> None:
    value = content_disposition("Πρόσκληση 2026.pdf", inline=False)
    assert value.startswith('attachment; filename="2026.pdf"; ')
    encoded = value.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == "Πρόσκληση 2026.pdf"
    assert re.fullmatch(r"[A-Za-z0-9%!#$&+\-.^_`|~]+", encoded)  # RFC 8187 attr-chars only


def test_disposition_remakes_a_bad_name_safe() -> None:
    value = content_disposition('../x"\r\n.txt', inline=False)
    assert value == 'attachment; filename="x .txt"'


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300), st.booleans())
def test_any_name_gives_a_header_value_that_cannot_break_out(name: str, inline: bool) -> None:
    safe = safe_filename(name)
    assert safe and "/" not in safe and "\\" not in safe and '"' not in safe
    value = content_disposition(name, inline)
    value.encode("ascii")  # a header value: ASCII only, no CR, LF or quote inside the name
    assert "\r" not in value and "\n" not in value
    quoted = value.split('filename="', 1)[1].split('"', 1)
    assert quoted[1] in ("",) or quoted[1].startswith("; filename*=UTF-8''")


@pytest.mark.parametrize(
    ("text", "numbers"),
    [("1", [1]), ("2.1.3", [2, 1, 3]), ("0", None), ("1..2", None), ("a", None), ("", None)],
)
def test_parse_section(text: str, numbers: list[int] | None) -> None:
    assert parse_section(text) == numbers
