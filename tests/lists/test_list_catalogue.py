"""The lists' own catalogue: every text the lists write to people (``_()`` in
``ourmail/lists``) has a Greek translation, and a Greek list writes Greek."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from babel.messages.pofile import read_po

from ourmail.lists import compose

LISTS = Path(compose.__file__).parent


def marked_messages() -> set[str]:
    """Every string literal passed to ``_()`` in the lists' code (implicitly joined literals
    as Python joins them)."""
    found: set[str] = set()
    for path in LISTS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "_"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


def test_every_list_message_has_a_greek_translation() -> None:
    with (LISTS / "locale/el/LC_MESSAGES/ourmail-lists.po").open("rb") as f:
        catalog = read_po(f, locale="el")
    translated = {m.id: m.string for m in catalog if m.id}
    messages = marked_messages()
    assert len(messages) >= 20
    missing = sorted(m for m in messages if not translated.get(m))
    assert not missing
    greek = compose.translator("el")
    assert all(greek.gettext(m) != m for m in messages)
    # Placeholders survive translation: str.format would fail on a missing or renamed one.
    for m in messages:
        assert set(re.findall(r"\{(\w+)\}", greek.gettext(m))) == set(
            re.findall(r"\{(\w+)\}", m)
        ), m


def test_english_and_unknown_languages_translate_nothing() -> None:
    assert compose.translator("en").gettext("Confirm leaving {list}") == "Confirm leaving {list}"
    assert compose.translator("xx").gettext("Confirm leaving {list}") == "Confirm leaving {list}"
