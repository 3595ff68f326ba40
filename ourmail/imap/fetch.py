"""FETCH data items (RFC 3501 §6.4.5, §7.4.2; BINARY, RFC 3516): parsing the request, rendering
the response.

FLAGS, UID, RFC822.SIZE and INTERNALDATE come from the index, ENVELOPE, BODYSTRUCTURE and BODY
from the stored summary; only body sections read the message, once per message per command,
through its buffer (a memory map when large), and large sections are streamed
(:mod:`ourmail.mime.content`, :mod:`ourmail.imap.literal`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import attrs

from ourmail.imap.literal import literal_pieces
from ourmail.imap.render import summary_body, summary_envelope
from ourmail.imap.wire import Atom, ParseError, Token, flag_list, tokenize
from ourmail.interfaces import IStoredMessage
from ourmail.mime import content, structure
from ourmail.mime.content import Content, Span, Whole, Window

#: What one item renders to: bytes, and content to stream (a large literal's data).
Pieces = list[bytes | Content]

_SECTION_RE = re.compile(
    r"^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[(.*)\](?:<(\d+)\.(\d+)>)?$",
    re.S | re.I,
)
#: RFC 3516 §4.1 section-binary: part numbers only.
_PART_PATH_RE = re.compile(r"^(?:[1-9]\d{0,4}(?:\.[1-9]\d{0,4})*)?$")
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
_SIMPLE = {
    "FLAGS",
    "UID",
    "RFC822.SIZE",
    "INTERNALDATE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "MODSEQ",  # RFC 7162 §3.1.4
}
_TEXTS = {"", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"}
MAX_ATTS = 100


@attrs.frozen
class FetchAtt:
    """One requested data item."""

    kind: str
    label: bytes
    peek: bool = True
    numbers: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None


def with_item(atts: list[FetchAtt], kind: str, first: bool = False) -> list[FetchAtt]:
    """``atts`` with the simple item ``kind`` added (at the front or the end) unless present."""
    if any(a.kind == kind for a in atts):
        return atts
    att = FetchAtt(kind=kind, label=kind.encode())
    return [att, *atts] if first else [*atts, att]


def parse_atts(tok: Token) -> list[FetchAtt]:
    """The items of a FETCH request: one atom, a macro, or a parenthesised list."""
    items: Sequence[Token] = tok if isinstance(tok, list) else [tok]
    if isinstance(tok, Atom) and tok.upper() in _MACROS:
        items = [Atom(x) for x in _MACROS[tok.upper()]]
    if not items or len(items) > MAX_ATTS:
        raise ParseError("bad FETCH item list")
    return [_parse_att(item) for item in items]


def _parse_att(tok: Token) -> FetchAtt:
    if not isinstance(tok, Atom):
        raise ParseError("bad FETCH item")
    name = tok.upper()
    if name in _SIMPLE:
        peek = name not in ("RFC822", "RFC822.TEXT")
        return FetchAtt(kind=name, label=name.encode(), peek=peek)
    m = _SECTION_RE.match(tok)
    if not m:
        raise ParseError(f"unknown FETCH item {tok[:40]}")
    if m.group(1).upper().startswith("BINARY"):
        return _binary_att(m)
    spec_tokens = tokenize(m.group(2).encode("utf-8"), [])
    numbers: list[int] = []
    text, fields = "", ()
    if spec_tokens:
        head = spec_tokens[0]
        if not isinstance(head, Atom):
            raise ParseError("bad section")
        parts = head.upper().split(".")
        while parts and parts[0].isdigit():
            n = int(parts.pop(0))
            if not 0 < n < 100_000:
                raise ParseError("bad section part number")
            numbers.append(n)
        text = ".".join(parts)
        if text not in _TEXTS or (text == "MIME" and not numbers):
            raise ParseError("bad section")
        if text.startswith("HEADER.FIELDS"):
            if len(spec_tokens) != 2 or not isinstance(spec_tokens[1], list) or not spec_tokens[1]:
                raise ParseError("HEADER.FIELDS needs a list of field names")
            fields = tuple(
                (f.encode() if isinstance(f, Atom) else f).decode("ascii", "replace").upper()
                for f in spec_tokens[1]
                if not isinstance(f, list)
            )
        elif len(spec_tokens) != 1:
            raise ParseError("bad section")
    spec = ".".join([*map(str, numbers), *([text] if text else [])])
    if fields:
        spec += " (" + " ".join(fields) + ")"
    partial = None
    label = f"BODY[{spec}]"
    if m.group(3) is not None:
        partial = (int(m.group(3)), int(m.group(4)))
        label += f"<{partial[0]}>"
    return FetchAtt(
        kind="SECTION",
        label=label.encode("utf-8"),
        peek=m.group(1).upper() != "BODY",
        numbers=tuple(numbers),
        text=text,
        fields=fields,
        partial=partial,
    )


def _binary_att(m: re.Match[str]) -> FetchAtt:
    """RFC 3516 §4.1: BINARY[part]<partial>, BINARY.PEEK[part]<partial>, BINARY.SIZE[part]."""
    name, spec = m.group(1).upper(), m.group(2)
    if not _PART_PATH_RE.match(spec):
        raise ParseError("BINARY sections are part numbers only")
    numbers = tuple(int(n) for n in spec.split(".")) if spec else ()
    if name == "BINARY.SIZE":
        if m.group(3) is not None:
            raise ParseError("BINARY.SIZE takes no partial range")
        return FetchAtt(kind="BINARY.SIZE", label=f"BINARY.SIZE[{spec}]".encode(), numbers=numbers)
    label = f"BINARY[{spec}]"
    partial = None
    if m.group(3) is not None:
        partial = (int(m.group(3)), int(m.group(4)))
        label += f"<{partial[0]}>"
    return FetchAtt(
        kind="BINARY",
        label=label.encode(),
        peek=name == "BINARY.PEEK",
        numbers=numbers,
        partial=partial,
    )


def internal_date(ts: float) -> bytes:
    """RFC 3501 ``date-time``: ``"17-Jul-1996 02:44:25 +0000"``."""
    return time.strftime('"%d-%b-%Y %H:%M:%S +0000"', time.gmtime(ts)).encode("ascii")


class Rendered(structure.LazyMessage):
    """A message's parsed form, made once per message per FETCH."""

    def __init__(self, message: IStoredMessage) -> None:
        super().__init__(message.buffer)
        self.message = message

    def section(self, numbers: list[int], text: str, fields: list[str]) -> Content:
        if not numbers and not text:  # BODY[], RFC822: the whole message, no parsing needed
            return Span(self.data, 0, len(self.data))
        found = structure.section(self.part, self.data, numbers, text, fields)
        if isinstance(found, bytes):
            return Whole(found)
        return Span(self.data, *found)

    def binary(self, numbers: list[int]) -> Content:
        """RFC 3516 §4.2: the part's body with its transfer encoding undone; the whole message
        (or a multipart or message part) as it is.  UnknownCTE if it cannot be decoded."""
        part = structure.part_at(self.part, numbers) if numbers else None
        if part is None:
            return Span(self.data, 0, len(self.data)) if not numbers else Whole(b"")
        raw = Span(self.data, part.body_start, part.end)
        if part.children or part.embedded is not None or part.maintype == "multipart":
            return raw
        return content.decoded(raw, part.header("content-transfer-encoding"))


def render(att: FetchAtt, r: Rendered, flags: frozenset[str]) -> Pieces:
    """``NAME value`` for one item of one message."""
    msg = r.message
    kind = att.kind
    value: bytes | Pieces
    if kind == "FLAGS":
        value = _flag_list(flags)
    elif kind == "UID":
        value = str(msg.uid).encode()
    elif kind == "RFC822.SIZE":
        value = str(msg.size).encode()
    elif kind == "MODSEQ":
        value = b"(%d)" % msg.modseq
    elif kind == "INTERNALDATE":
        value = internal_date(msg.internal_date)
    elif kind == "ENVELOPE":
        value = summary_envelope(msg.summary())
    elif kind == "BODYSTRUCTURE":
        value = summary_body(msg.summary(), extensible=True)
    elif kind == "BODY":
        value = summary_body(msg.summary(), extensible=False)
    elif kind == "BINARY.SIZE":
        value = str(r.binary(list(att.numbers)).size).encode()
    elif kind == "BINARY":
        value = literal_pieces(_window(r.binary(list(att.numbers)), att), binary=True)
    else:
        text = {"RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}.get(kind, att.text)
        found = r.section(list(att.numbers), text, list(att.fields))
        value = literal_pieces(_window(found, att))
    if isinstance(value, bytes):
        return [att.label + b" " + value]
    head = value[0]
    assert isinstance(head, bytes)
    return [att.label + b" " + head, *value[1:]]


_FLAG_LISTS: dict[frozenset[str], bytes] = {}


def _flag_list(flags: frozenset[str]) -> bytes:
    """``flag_list``, remembered: a folder has few distinct sets of flags, and a FETCH of
    FLAGS renders one per message."""
    found = _FLAG_LISTS.get(flags)
    if found is None:
        if len(_FLAG_LISTS) >= 1024:
            _FLAG_LISTS.clear()
        found = _FLAG_LISTS[flags] = flag_list(flags)
    return found


def _window(found: Content, att: FetchAtt) -> Content:
    return found if att.partial is None else Window(found, *att.partial)
