"""The webmail's catalogues: every marked message has a Greek translation, and the language is
chosen from the user's cookie, then Accept-Language (issue 16 point 10)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from ourmail.web import i18n

WEB = Path(i18n.__file__).parent
MARKED = re.compile(r"""\b_\(\s*(["'])(.+?)\1\s*\)""", re.S)


def marked_messages() -> set[str]:
    """Every literal passed to ``_()`` in the web package's code and templates."""
    found: set[str] = set()
    for path in [*WEB.glob("*.py"), *WEB.glob("templates/*.html")]:
        found |= {m.group(2) for m in MARKED.finditer(path.read_text("utf-8"))}
    return found


def test_every_message_has_a_greek_translation() -> None:
    with (WEB / "locale/el/LC_MESSAGES/ourmail.po").open("rb") as f:
        catalog = read_po(f, locale="el")
    translated = {m.id: m.string for m in catalog if m.id}
    messages = marked_messages()
    assert len(messages) >= 10
    missing = sorted(m for m in messages if not translated.get(m))
    assert not missing
    greek = i18n.translations("el")
    assert all(greek.gettext(m) != m for m in messages)


@pytest.mark.parametrize(
    ("cookie", "header", "chosen"),
    [
        (None, None, "en"),
        (None, "el-GR,el;q=0.9,en;q=0.8", "el"),
        (None, "en;q=0.5, el;q=0.6", "el"),
        (None, "fr, de;q=0.9", "en"),
        (None, "el;q=0, en", "en"),
        (None, "el;q=nonsense, en;q=0.1", "en"),
        (None, "," * 5000 + "el", "en"),  # only the first ranges are read
        ("en", "el", "en"),
        ("el", "en", "el"),
        ("xx", "el", "el"),
    ],
)
def test_the_language_is_chosen(cookie: str | None, header: str | None, chosen: str) -> None:
    assert i18n.choose(cookie, header) == chosen
