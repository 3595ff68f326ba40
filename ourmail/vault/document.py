"""What the search index is given per captured message: a :class:`VaultDocument`.

:func:`document` reads a ``capture`` record (docs/vault-format.md) and its body: the header
fields a search names (From, To, Cc, Bcc, Subject, Message-ID, Date; RFC 5322 §3.6), the
attachments' file names and the text of the text parts, with text/html reduced to its text.

Everything is bounded, because a vaulted message is whatever a sender wrote: at most
``MAX_PARTS`` parts are looked at and ``MAX_DEPTH`` levels of nesting, at most ``MAX_TEXT``
characters of text and ``MAX_NAMES`` file names are kept.  Odd or broken MIME gives a
document with what could be read, never an exception.
"""

from __future__ import annotations

import email.message
import email.utils
import re
import zlib
from collections.abc import Iterator
from typing import Any

from lxml import etree
from lxml import html as lxml_html

from ourmail.interfaces import VaultDocument, VaultEnvelope
from ourmail.mime import content, structure
from ourmail.mime.summary import decode_header
from ourmail.vault.records import Record

#: Most characters of text kept per message (the rest is not searchable).
MAX_TEXT = 256 * 1024
#: Most MIME parts looked at, and deepest nesting followed (multiparts, message/rfc822).
MAX_PARTS = 200
MAX_DEPTH = 10
#: Most attachment names kept, and the longest name.
MAX_NAMES = 100
MAX_NAME = 255
#: Most addresses kept per header field.
MAX_ADDRESSES = 1000

_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")


def document(capture: Record, body: bytes) -> VaultDocument:
    """The document of a ``capture`` record and the body its ``body`` blob holds (empty
    when that content was removed by retention)."""
    fields = capture.fields
    envelope = _envelope(fields.get("envelope"))
    message = structure.to_crlf(plain(capture, fields) + body)
    try:
        root = structure.parse(message)
    except (ValueError, IndexError, UnicodeError):
        root = structure.Part(0, len(message), len(message), [])
    field = root.header
    senders = _addresses(root, ("from",))
    collected = _Collected()
    collected.walk(root, message, 0)
    return VaultDocument(
        seq=int(fields["seq"]),
        time=float(fields.get("time") or 0.0),
        envelope=envelope,
        sender=senders[0] if senders else envelope.sender.lower(),
        recipients=_addresses(root, ("to", "cc", "bcc")),
        subject=decode_header(field("subject") or "")[:1000],
        message_id=message_id(field("message-id") or ""),
        date=_date(field("date")),
        size=_int(fields.get("size"), len(message)),
        attachments=tuple(collected.names),
        text="\n".join(collected.text)[:MAX_TEXT],
    )


def plain(record: Record, fields: dict[str, Any]) -> bytes:
    """A record's content uncompressed, given its parsed ``fields`` (empty when it was
    removed or does not decompress)."""
    if not record.content or not fields.get("zlib"):
        return record.content
    try:
        return zlib.decompress(record.content)
    except zlib.error:
        return b""


def message_id(value: str) -> str:
    """A Message-ID without its angle brackets (RFC 5322 §3.6.4), as typed or as written."""
    found = _MESSAGE_ID.search(value)
    return (found.group(1) if found else value.strip().strip("<>").strip())[:1000]


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _envelope(value: Any) -> VaultEnvelope:
    """The capture's envelope, leniently: a field of the wrong type is left out."""
    env = value if isinstance(value, dict) else {}

    def text(name: str) -> str:
        found = env.get(name)
        return found if isinstance(found, str) else ""

    arrival = env.get("arrival")
    return VaultEnvelope(
        via=text("via"),
        sender=text("sender"),
        recipients=_strings(env.get("recipients")),
        mailboxes=_strings(env.get("mailboxes")),
        client=text("client"),
        user=text("user"),
        id=text("id"),
        arrival=float(arrival) if isinstance(arrival, int | float) else 0.0,
    )


def _addresses(part: structure.Part, names: tuple[str, ...]) -> tuple[str, ...]:
    """The addr-specs of these header fields, lower-cased, each once."""
    values = [
        raw.split(b":", 1)[1].decode("utf-8", "replace")
        for name, raw in part.fields
        if name in names and b":" in raw
    ]
    found: dict[str, None] = {}
    for addr in _addr_specs(values)[:MAX_ADDRESSES]:
        addr = addr.strip().lower()
        if addr and " " not in addr:
            found[addr] = None
    return tuple(found)


def _addr_specs(values: list[str]) -> list[str]:
    """The addr-specs of address fields (RFC 5322 §3.4): the common forms (``a@b``,
    ``Name <a@b>``, separated by commas) read directly, anything with quotes, comments or
    groups by the email package."""
    if any(c in v for v in values for c in '"();:\\'):
        return [addr for _, addr in email.utils.getaddresses(values)]
    out = []
    for value in values:
        for item in value.split(","):
            start = item.find("<")
            out.append(item[start + 1 : item.find(">", start)] if start >= 0 else item)
    return out


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class _Collected:
    """The text and file names of a part tree, gathered within the limits."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.names: list[str] = []
        self.parts = 0
        self.chars = 0

    def walk(self, part: structure.Part, data: bytes, depth: int) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS or depth > MAX_DEPTH:
            return
        if part.embedded is not None:
            self.walk(part.embedded, data, depth + 1)
            return
        if part.children:
            for child in _shown(part):
                self.walk(child, data, depth + 1)
            return
        disposition_field = part.header("content-disposition") or ""
        if "name" in disposition_field.lower() or any(k.startswith("name") for k in part.params):
            name = _filename(part)
            if name and len(self.names) < MAX_NAMES:
                self.names.append(name)
        disposition = disposition_field.split(";", 1)[0].strip().lower()
        if part.maintype != "text" or disposition == "attachment" or self.chars >= MAX_TEXT:
            return
        if part.subtype not in ("plain", "html"):
            return
        text = _text(part, data, MAX_TEXT - self.chars)
        if part.subtype == "html":
            text = html_text(text)
        self.text.append(text)
        self.chars += len(text)


def _shown(part: structure.Part) -> list[structure.Part]:
    """The children worth reading: of a multipart/alternative (RFC 2046 §5.1.4) the plain
    text when there is one (the HTML says the same), else all."""
    if part.subtype == "alternative":
        plain = [c for c in part.children if (c.maintype, c.subtype) == ("text", "plain")]
        if plain:
            return plain[:1]
    return part.children


def _filename(part: structure.Part) -> str:
    """The part's file name: Content-Disposition ``filename`` (RFC 2183) or Content-Type
    ``name``, with RFC 2231 continuations and charsets undone and RFC 2047 words decoded."""
    msg = email.message.Message()
    for field in ("content-type", "content-disposition"):
        value = part.header(field)
        if value is not None:
            msg[field] = value
    try:
        raw = msg.get_filename() or msg.get_param("name")
        if isinstance(raw, tuple):
            raw = email.utils.collapse_rfc2231_value(raw)
    except (ValueError, LookupError, UnicodeError, TypeError):
        return ""
    if not isinstance(raw, str):
        return ""
    return decode_header(raw).strip()[:MAX_NAME]


def _chunks(part: structure.Part, data: bytes) -> Iterator[bytes]:
    span = content.Span(data, part.body_start, part.end)
    try:
        yield from content.decoded(span, part.header("content-transfer-encoding")).chunks()
    except content.UnknownCTE:
        return


def _text(part: structure.Part, data: bytes, cap: int) -> str:
    """The part's text, transfer encoding and charset undone (RFC 2045 §6, §5.1), at most
    about ``cap`` characters (4 octets a character at most in any charset we decode)."""
    out = bytearray()
    for chunk in _chunks(part, data):
        out += chunk
        if len(out) >= cap * 4:
            break
    charset = part.params.get("charset", "utf-8").strip().lower() or "utf-8"
    try:
        return bytes(out).decode(charset, "replace")[:cap]
    except (LookupError, ValueError):
        return bytes(out).decode("utf-8", "replace")[:cap]


def html_text(markup: str) -> str:
    """The text an HTML part shows: no markup, scripts, styles or comments."""
    if not markup.strip():
        return ""
    try:
        root = lxml_html.document_fromstring(markup)
    except (etree.ParserError, ValueError):
        return ""
    etree.strip_elements(root, "script", "style", etree.Comment, with_tail=False)
    return " ".join(root.text_content().split())
