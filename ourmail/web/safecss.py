"""Inline ``style`` values from mail, reduced to declarations that cannot run code or fetch.

nh3 (Ammonia) keeps only allow-listed CSS properties and re-serialises what it keeps in a
canonical form (escapes resolved, strings double-quoted, ``prop:value;prop:value``), but it does
not look inside values.  This module does, on that canonical form only: a value may call no
function but colours (``rgb()``, ``hsl()``...) and ``url()``, and a ``url()`` must be a ``cid:``
part of the message (mapped to its same-origin address) or, when the reader allowed remote
content, an ``http(s):`` address.  Anything else (``expression()``, ``image-set()``, ``var()``,
``data:``, relative or scheme-less URLs, backslashes) drops the whole declaration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import attrs

# Properties for the layout of ordinary mail (newsletters, Outlook and Thunderbird markup).
# Left out on purpose: position, z-index, top/left/right/bottom (overlays that fake the reader's
# own interface), content, cursor, behavior, -moz-binding, filter, mask, transform, animation,
# transition, list-style-image and border-image (fetches that the url() check would also stop).
PROPERTIES = frozenset(
    {
        "background",
        "background-color",
        "background-image",
        "background-position",
        "background-repeat",
        "background-size",
        "border",
        "border-bottom",
        "border-bottom-color",
        "border-bottom-style",
        "border-bottom-width",
        "border-collapse",
        "border-color",
        "border-left",
        "border-left-color",
        "border-left-style",
        "border-left-width",
        "border-radius",
        "border-right",
        "border-right-color",
        "border-right-style",
        "border-right-width",
        "border-spacing",
        "border-style",
        "border-top",
        "border-top-color",
        "border-top-style",
        "border-top-width",
        "border-width",
        "caption-side",
        "clear",
        "color",
        "direction",
        "display",
        "float",
        "font",
        "font-family",
        "font-size",
        "font-style",
        "font-variant",
        "font-weight",
        "height",
        "letter-spacing",
        "line-height",
        "list-style-position",
        "list-style-type",
        "margin",
        "margin-bottom",
        "margin-left",
        "margin-right",
        "margin-top",
        "max-height",
        "max-width",
        "min-height",
        "min-width",
        "overflow",
        "padding",
        "padding-bottom",
        "padding-left",
        "padding-right",
        "padding-top",
        "table-layout",
        "text-align",
        "text-decoration",
        "text-indent",
        "text-transform",
        "unicode-bidi",
        "vertical-align",
        "visibility",
        "white-space",
        "width",
        "word-break",
        "word-spacing",
        "word-wrap",
    }
)

_COLOUR_FUNCTIONS = frozenset({"rgb", "rgba", "hsl", "hsla"})
_FUNCTION = re.compile(r"([-\w]*)\s*\(")
# After nh3 every url() argument is a double-quoted string: url("...").
_URL = re.compile(r'url\(\s*"([^"\\]*)"\s*\)', re.IGNORECASE)
# Characters a mapped same-origin URL may not carry into a CSS string.
_UNSAFE_IN_CSS_STRING = re.compile(r'["\\\n\r\f()<>]')


@attrs.frozen
class StyleResult:
    """A filtered ``style`` value (``None``: nothing kept) and whether a remote url() was cut."""

    value: str | None
    blocked_remote: bool


def _declarations(style: str) -> Iterator[str]:
    """Split a canonical declaration list at ``;`` outside strings and parentheses."""
    start, depth, quote = 0, 0, ""
    for index, char in enumerate(style):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == ";" and depth == 0:
            yield style[start:index]
            start = index + 1
    yield style[start:]


def filter_style(
    style: str, *, allow_remote: bool, resolve_cid: Callable[[str], str | None]
) -> StyleResult:
    """Keep the declarations of ``style`` (nh3's canonical output) that are safe in the frame.

    ``resolve_cid`` maps a whole ``cid:`` URL (RFC 2392) to a same-origin address, or
    ``None`` when the message has no such part.
    """
    kept: list[str] = []
    blocked = False
    for declaration in _declarations(style):
        name, colon, value = declaration.partition(":")
        name = name.strip().lower()
        if not colon or name not in PROPERTIES or "\\" in value:
            continue
        result = _filter_value(value, allow_remote=allow_remote, resolve_cid=resolve_cid)
        blocked = blocked or result.blocked_remote
        if result.value is not None:
            kept.append(f"{name}:{result.value.strip()}")
    return StyleResult(";".join(kept) or None, blocked)


def _filter_value(
    value: str, *, allow_remote: bool, resolve_cid: Callable[[str], str | None]
) -> StyleResult:
    """One declaration's value: colour functions as they are, url() by the remote policy."""
    for match in _FUNCTION.finditer(value):
        function = match.group(1).lower()
        if function not in _COLOUR_FUNCTIONS and function != "url":
            return StyleResult(None, False)
    # Every url( must be a well-formed quoted url("...") that _URL can read.
    if value.lower().count("url(") != len(_URL.findall(value)):
        return StyleResult(None, False)
    blocked = False

    def replace(match: re.Match[str]) -> str:
        nonlocal blocked
        target = match.group(1).strip()
        if target.lower().startswith("cid:"):
            mapped = resolve_cid(target)
            if mapped is None or _UNSAFE_IN_CSS_STRING.search(mapped):
                raise _Drop
            return f'url("{mapped}")'
        if target.lower().startswith(("http://", "https://")):
            if not allow_remote:
                blocked = True
                raise _Drop
            if _UNSAFE_IN_CSS_STRING.search(target):
                raise _Drop
            return f'url("{target}")'
        raise _Drop

    try:
        return StyleResult(_URL.sub(replace, value), blocked)
    except _Drop:
        return StyleResult(None, blocked)


class _Drop(Exception):
    """Raised inside a url() substitution: the declaration is dropped."""
