"""Simple rich text from the compose page's editor: what it may contain, and its plain-text
alternative.

The editor (``static/compose.js``, a ``contenteditable`` with bold, italic, lists and links)
sends its markup; the server never trusts it: :func:`clean` keeps only the few elements the
editor makes (nh3, an allow-list sanitiser) and links to ``http``, ``https`` and ``mailto``.
The message then goes as ``multipart/alternative`` (RFC 2046 §5.1.4): this plain text first,
the HTML last (the richer form, preferred by readers that can show it).
"""

from __future__ import annotations

import html
import re

import nh3

#: What the editor makes, and nothing else.
TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ul", "ol", "li", "a", "p", "br", "div", "blockquote"}
)
ATTRIBUTES = {"a": {"href"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
_BREAKS = re.compile(r"(?i)<br\s*/?>|</?(p|div|li|tr|ul|ol|blockquote)(\s[^>]*)?>")


def clean(markup: str) -> str:
    """``markup`` with only the editor's elements; links get ``rel="noopener noreferrer"``."""
    return nh3.clean(
        markup,
        tags=set(TAGS),
        attributes={k: set(v) for k, v in ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer",
    ).strip()


def to_plain(markup: str) -> str:
    """The text of ``markup``: line breaks where blocks end, list items as ``- ``, a link's
    address after its text.  The markup is cleaned first: balanced, with only the editor's
    elements, so the patterns below never scan far for an end that is not there."""
    text = re.sub(r"(?i)<li[^>]*>", "- ", clean(markup))
    text = re.sub(r'(?i)<a href="([^"]*)"[^>]*>([^<]*(?:<(?!/a>)[^<]*)*)</a>', _link, text)
    text = _BREAKS.sub("\n", text)
    text = html.unescape(nh3.clean(text, tags=set()))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def _link(match: re.Match[str]) -> str:
    """A link as ``text <address>`` (still HTML: the address stays escaped), or just the
    address when that is its text."""
    href, label = match.group(1), match.group(2)
    if html.unescape(href) == html.unescape(nh3.clean(label, tags=set())).strip():
        return label
    return f"{label} &lt;{href}&gt;"


def document(markup: str) -> str:
    """A whole HTML document around the (clean) editor markup, for the message's HTML part."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        f"<body>{markup}</body></html>\n"
    )
