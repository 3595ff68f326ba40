"""``text/plain`` bodies as HTML: escaped, links made clickable, lines and quotes kept.

With ``format=flowed`` (RFC 3676) soft line breaks are joined into paragraphs and quote
depth becomes nested ``<blockquote>``\\ s; fixed text keeps every line break as it is.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

from ourmail.web.safehtml import SafeHTML

# http(s) and mailto only; trailing punctuation belongs to the sentence, not the link.
_LINK = re.compile(r"\b(?:https?://|mailto:)[^\s<>\"]+", re.IGNORECASE)
_TRAILING = ".,;:!?'\")]}"
_SIGNATURE_SEPARATOR = "-- "  # RFC 3676 §4.3: never flowed
_ANCHOR = '<a href="{0}" target="_blank" rel="noopener noreferrer">{1}</a>'


def _linkify(line: str) -> str:
    """Escape one line of text, with its http(s) and mailto addresses as links."""
    out: list[str] = []
    position = 0
    for match in _LINK.finditer(line):
        url = match.group(0).rstrip(_TRAILING)
        if not url.partition(":")[2].lstrip("/"):  # a bare "http://" or "mailto:"
            continue
        out.append(html.escape(line[position : match.start()]))
        escaped = html.escape(url)
        out.append(_ANCHOR.format(escaped, escaped))
        position = match.start() + len(url)
    out.append(html.escape(line[position:]))
    return "".join(out)


def unflow(text: str, *, delsp: bool = False) -> Iterator[tuple[int, str]]:
    """RFC 3676 §4: the logical lines of a ``format=flowed`` body, as (quote depth, text)."""
    paragraph: list[str] = []
    depth = 0
    for raw in text.splitlines():
        line_depth = len(raw) - len(raw.lstrip(">"))
        line = raw[line_depth:]
        if line.startswith(" "):  # §4.4 space-stuffing
            line = line[1:]
        if paragraph and line_depth != depth:  # §4.5: a depth change ends the paragraph
            yield depth, "".join(paragraph)
            paragraph = []
        depth = line_depth
        flowed = line.endswith(" ") and line != _SIGNATURE_SEPARATOR
        if flowed and delsp:  # §4.2: DelSp=yes, the space is not content
            line = line[:-1]
        paragraph.append(line)
        if not flowed:
            yield depth, "".join(paragraph)
            paragraph = []
    if paragraph:
        yield depth, "".join(paragraph)


def text_to_html(text: str, *, flowed: bool = False, delsp: bool = False) -> SafeHTML:
    """A plain-text body as safe HTML.

    ``flowed`` and ``delsp`` are the ``format=flowed`` and ``delsp=yes`` parameters of the
    part's Content-Type (RFC 3676 §4.1).
    """
    lines = unflow(text, delsp=delsp) if flowed else ((0, line) for line in text.splitlines())
    out: list[str] = ['<div class="om-text">']
    open_depth = 0
    for depth, line in lines:
        # str * negative is "": only one of the two adds anything.
        out.append("</blockquote>" * (open_depth - depth))
        out.append('<blockquote type="cite">' * (depth - open_depth))
        open_depth = depth
        out.append(_linkify(line) + "<br>")
    out.append("</blockquote>" * open_depth + "</div>")
    return SafeHTML("".join(out))
