"""Changing a list's settings from text (``ourmail list set LIST key=value``, the console's
settings form): every field of :class:`~ourmail.lists.model.ListSettings` but its address,
each checked, with an error that says what is expected; and making and removing a list
(``ourmail list create|delete``, the console's lists page), with the same checks for both."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs

from ourmail.config import parse_size
from ourmail.interfaces import AccountRefused
from ourmail.lists.compose import LANGUAGES
from ourmail.lists.listdb import ListDB, ListExists, NoSuchList
from ourmail.lists.model import SUFFIXES, Archive, ListSettings, PostPolicy, ReplyTo, parse_address

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


def addresses_of(address: str) -> tuple[str, ...]:
    """The list address and its command addresses (``-request``, ``-join``…)."""
    local, _, domain = address.rpartition("@")
    return (address, *(f"{local}{suffix}@{domain}" for suffix in SUFFIXES))


def taken(address: str, is_taken: Callable[[str], bool]) -> str | None:
    """Which of a new list's addresses ``is_taken`` (a user, alias or group), if one is."""
    return next((a for a in addresses_of(address) if is_taken(a)), None)


def clash(address: str, lists: Iterable[str]) -> str | None:
    """The list among ``lists`` whose addresses a new list at ``address`` would share: one
    whose command address it is (``team-request@`` beside ``team@``), or one at one of its
    command addresses (``team@`` beside a list ``team-join@``)."""
    known = set(lists)
    found = parse_address(address, known)
    if found is not None:
        return found.list
    return next((a for a in addresses_of(address) if a in known), None)


def create(
    db: ListDB,
    address: str,
    given: Mapping[str, str],
    normalise: Callable[[str], str],
    is_taken: Callable[[str], bool],
    now: float,
) -> ListSettings:
    """Make the list ``address`` (normalised, in a served domain) with the settings ``given``
    (``owners`` at least); :class:`AccountRefused` (``exists``, ``bad-setting``) when one of
    its addresses is a user, alias, group or another list's, or a setting cannot be.  Blocks
    (the database): in a thread."""
    used = taken(address, is_taken)
    if used is not None:
        raise AccountRefused("exists", f"{used} is a user, alias or group already", used)
    lists = {lst.address for lst in db.lists()}
    if address in lists:
        raise AccountRefused("exists", f"the list {address} exists already", address)
    other = clash(address, lists)
    if other is not None:
        raise AccountRefused("list-clash", f"the list {other} answers at {address} already", other)
    try:
        lst = change(ListSettings(address), given, normalise)
        db.create(lst, now)
    except BadSetting as e:
        raise AccountRefused("bad-setting", str(e), e.key) from None
    except ListExists:
        raise AccountRefused("exists", f"the list {address} exists already", address) from None
    return lst


def delete(db: ListDB, address: str) -> None:
    """Remove the list ``address`` with its members, pending confirmations and held posts'
    rows (its archive stays in the store); :class:`AccountRefused` (``no-such-list``) when
    there is none.  Blocks: in a thread."""
    try:
        db.delete(address)
    except NoSuchList:
        raise AccountRefused("no-such-list", f"no such list: {address}", address) from None
