"""The webmail's languages: gettext catalogues for English and Greek, and the choice of one.

The catalogues are the ``.po`` files in ``locale/<lang>/LC_MESSAGES/ourmail.po``, compiled in
memory when first used (:mod:`ourmail.catalogues`).  English is the source language (the
``msgid``\\ s).

The language is the user's choice (the ``ourmail_lang`` cookie) when set, else the best match
for the browser's ``Accept-Language`` (RFC 9110 §12.5.4), else English.
"""

from __future__ import annotations

import functools
import gettext

from ourmail import catalogues

#: The languages there are catalogues for, with their own names (for the switcher).
LANGUAGES: dict[str, str] = {"en": "English", "el": "Ελληνικά"}
DEFAULT = "en"
DOMAIN = "ourmail"
#: The cookie that keeps the user's choice.
COOKIE = "ourmail_lang"
#: Language ranges read from one Accept-Language header, at most.
MAX_RANGES = 20


@functools.cache
def translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of ``lang`` (one of LANGUAGES); English translates nothing."""
    if lang not in LANGUAGES or lang == DEFAULT:
        return gettext.NullTranslations()
    return catalogues.compiled(__package__, lang, DOMAIN)


def from_accept_language(header: str | None) -> str | None:
    """The best of LANGUAGES for an ``Accept-Language`` value (``el-GR,el;q=0.9,en;q=0.8``),
    or None when none is acceptable.  Malformed entries are skipped."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header[:1000].split(",")[:MAX_RANGES]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else None


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The language of a response: the user's choice, the browser's, or English."""
    if cookie is not None and cookie in LANGUAGES:
        return cookie
    return from_accept_language(accept_language) or DEFAULT
