"""A user's out-of-office settings, as kept in ``IPreferences`` under :data:`KEY`.

The JSON value (written by the webmail's settings page, read at every delivery)::

    {"enabled": true, "subject": "Away until Monday", "text": "I am away ...",
     "first": "2026-12-01", "last": "2026-12-24", "days": 7}

``subject`` may be empty (the reply is then ``Auto: <the original subject>``, RFC 3834
§3.1); ``first`` and ``last`` (ISO dates, both days included) may be null: no limit on that
side; ``days`` is the period in which one sender hears the reply once (RFC 5230 §4.1).  A value
that cannot be read is taken as off.
"""

from __future__ import annotations

import datetime

import attrs

#: The ``IPreferences`` key.
KEY = "vacation"
#: RFC 5230 §4.1: ``:days`` defaults to 7 and is at least 1; a site may set a maximum.
DEFAULT_DAYS, MIN_DAYS, MAX_DAYS = 7, 1, 90
#: Longest subject and text kept, in characters.
MAX_SUBJECT, MAX_TEXT = 200, 10_000


@attrs.frozen
class Vacation:
    """One user's out-of-office reply."""

    enabled: bool = False
    subject: str = ""
    text: str = ""
    first: datetime.date | None = None
    last: datetime.date | None = None
    days: int = DEFAULT_DAYS

    def active_on(self, day: datetime.date) -> bool:
        """Whether the reply is sent for mail arriving on ``day``."""
        if not self.enabled or not self.text.strip():
            return False
        if self.first is not None and day < self.first:
            return False
        return self.last is None or day <= self.last

    def to_json(self) -> dict[str, object]:
        """The value kept in ``IPreferences``."""
        return {
            "enabled": self.enabled,
            "subject": self.subject,
            "text": self.text,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "days": self.days,
        }

    @classmethod
    def from_json(cls, value: object) -> Vacation:
        """The settings kept as ``value`` (None or unreadable: off)."""
        if not isinstance(value, dict):
            return cls()
        try:
            days = value.get("days", DEFAULT_DAYS)
            if not isinstance(days, int) or isinstance(days, bool):
                days = DEFAULT_DAYS
            return cls(
                enabled=value.get("enabled") is True,
                subject=one_line(_text(value.get("subject"), MAX_SUBJECT)),
                text=_text(value.get("text"), MAX_TEXT),
                first=parse_day(value.get("first")),
                last=parse_day(value.get("last")),
                days=min(max(days, MIN_DAYS), MAX_DAYS),
            )
        except ValueError:
            return cls()


def parse_day(value: object) -> datetime.date | None:
    """An ISO date (``2026-12-24``), or None for an empty value; ValueError otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    return datetime.date.fromisoformat(value.strip())


def one_line(text: str) -> str:
    """``text`` with every run of white space (line breaks too) made one space: a header
    field's value (RFC 5322 §2.2)."""
    return " ".join(text.split())


def _text(value: object, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""
