"""Changing a list's settings from text (``ourmail list set LIST key=value``, the console's
settings form): every field of :class:`~ourmail.lists.model.ListSettings` but its address,
each checked, with an error that says what is expected."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from ourmail.config import parse_size
from ourmail.lists.compose import LANGUAGES
from ourmail.lists.model import Archive, ListSettings, PostPolicy, ReplyTo

#: Longest one-line texts, and the footer.
MAX_LINE = 200
MAX_FOOTER = 4000
#: Most addresses in one of the address fields.
MAX_ADDRESSES = 1000
TRUE = frozenset({"true", "yes", "on", "1"})
FALSE = frozenset({"false", "no", "off", "0"})
ADDRESS_FIELDS = ("owners", "moderators", "posters")
ENUMS: Mapping[str, type[PostPolicy] | type[ReplyTo] | type[Archive]] = {
    "post_policy": PostPolicy,
    "reply_to": ReplyTo,
    "archive": Archive,
}
#: The fields ``set`` may change (all but the address).
FIELDS = tuple(f.name for f in attrs.fields(ListSettings) if f.name != "address")


class BadSetting(ValueError):
    """A setting that cannot be: the message (``key: what is expected``) says what is
    expected."""

    @property
    def key(self) -> str:
        """The setting refused."""
        return str(self).partition(":")[0]


def _line(key: str, value: str, most: int = MAX_LINE) -> str:
    if len(value) > most or any(c in value for c in "\r\n\0"):
        raise BadSetting(f"{key}: one line of at most {most} characters")
    return value.strip()


def value_of(settings: ListSettings, key: str) -> str:
    """A setting as text, as :func:`change` reads it."""
    value: object = getattr(settings, key)
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (PostPolicy, ReplyTo, Archive)):
        return str(value.value)
    return str(value)


def parse(key: str, text: str, normalise: Callable[[str], str]) -> object:
    """The value of the setting ``key`` that ``text`` gives; ``normalise`` takes an address
    apart (ValueError when it is none)."""
    if key not in FIELDS:
        raise BadSetting(f"{key}: no such setting; the settings are: {', '.join(FIELDS)}")
    default = next(f.default for f in attrs.fields(ListSettings) if f.name == key)
    if key in ADDRESS_FIELDS:
        found = [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]
        if len(found) > MAX_ADDRESSES:
            raise BadSetting(f"{key}: at most {MAX_ADDRESSES} addresses")
        try:
            return tuple(dict.fromkeys(normalise(a) for a in found))
        except ValueError as e:
            raise BadSetting(f"{key}: {e}") from None
    if key in ENUMS:
        kind = ENUMS[key]
        try:
            return kind(text.strip().lower())
        except ValueError:
            raise BadSetting(f"{key}: one of {', '.join(m.value for m in kind)}") from None
    if isinstance(default, bool):
        word = text.strip().lower()
        if word not in TRUE | FALSE:
            raise BadSetting(f"{key}: true or false")
        return word in TRUE
    if key == "max_size":
        try:
            size = parse_size(text)
        except ValueError:
            raise BadSetting(f"{key}: a size in octets, or with K, M or G (2M)") from None
        if size < 1024:
            raise BadSetting(f"{key}: at least 1K")
        return size
    if key == "bounce_limit":
        try:
            limit = float(text)
        except ValueError:
            limit = 0.0
        if not 0 < limit <= 1000:
            raise BadSetting(f"{key}: a number above 0, at most 1000")
        return limit
    if key == "language":
        if text.strip() not in LANGUAGES:
            raise BadSetting(f"{key}: one of {', '.join(LANGUAGES)}")
        return text.strip()
    if key == "group":
        try:
            return normalise(text.strip()) if text.strip() else ""
        except ValueError as e:
            raise BadSetting(f"group: {e}") from None
    if key == "footer":
        if len(text) > MAX_FOOTER or "\0" in text:
            raise BadSetting(f"footer: at most {MAX_FOOTER} characters")
        return text.replace("\r\n", "\n").replace("\\n", "\n")
    return _line(key, text)


def change(
    settings: ListSettings, changes: Mapping[str, str], normalise: Callable[[str], str]
) -> ListSettings:
    """``settings`` with ``changes`` (setting -> text) made; :class:`BadSetting` for the first
    that cannot be (nothing changed then)."""
    values = {key: parse(key, text, normalise) for key, text in changes.items()}
    changed = attrs.evolve(settings, **values)  # type: ignore[arg-type]
    if not changed.owners:
        raise BadSetting("owners: a list needs at least one owner")
    return changed
