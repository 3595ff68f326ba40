"""A post's header section as the list reads and edits it: raw fields, bytes in, bytes out.

The list never re-serialises a whole message: it splits the header section into its fields
(each kept with its folding and CRLF, RFC 5322 §2.2), drops, replaces or adds whole fields,
and joins them again, so that every octet it does not mean to change stays as it was (the
poster's DKIM signature may then still verify).
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import re
from collections.abc import Iterable
from pathlib import Path

import attrs

from ourmail.mime.structure import to_crlf

#: At most this much of a message is read as its header section; a longer "header" ends
#: there (hostile input stays cheap).
MAX_HEADER = 256 * 1024
#: At most this many fields are kept; the rest of an absurd header section is dropped.
MAX_FIELDS = 2000
#: An address field longer than this is not parsed (the ``email`` parser's time grows with
#: it; an honest ``From:`` or ``Reply-To:`` is far shorter).
MAX_ADDRESS_FIELD = 16 * 1024
#: A field name (RFC 5322 §2.2: printable ASCII but the colon), with the blanks before the
#: colon that RFC 5322 §4.5 obsolete syntax allows.
_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*")


@attrs.frozen
class Field:
    """One header field: its lower-cased name and its raw octets (folding and CRLF kept)."""

    name: str
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value as text (octets that are not UTF-8 kept as surrogates)."""
        body = self.raw.split(b":", 1)[1] if b":" in self.raw else b""
        text = body.decode("utf-8", "surrogateescape")
        return " ".join(text.split())


def header_end(data: bytes) -> int:
    """Where the body starts in ``data`` (CRLF line endings): after the empty line that ends
    the header section, or its end when there is none."""
    if data.startswith(b"\r\n"):
        return 2
    end = data.find(b"\r\n\r\n", 0, MAX_HEADER)
    return len(data) if end < 0 else end + 4


def split(data: bytes) -> tuple[list[Field], bytes]:
    """The header fields of ``data`` and its body (after the empty line)."""
    start = header_end(data)
    return parse_fields(data[:start]), data[start:]


def parse_fields(header: bytes) -> list[Field]:
    """The fields of a header section.  A line that is neither a field nor a continuation,
    or a field whose name is not one, is dropped with its continuations: receivers would
    take it for the end of the header section and the fields after it for the body."""
    out: list[Field] = []
    dropped = False
    # A bare CR or LF ends a line for most parsers (RFC 5322 §2.3 forbids them).
    for line in to_crlf(header).split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if out and not dropped:
                out[-1] = Field(out[-1].name, out[-1].raw + line + b"\r\n")
            continue
        name, colon, rest = line.partition(b":")
        dropped = not colon or not _NAME.fullmatch(name) or len(out) >= MAX_FIELDS
        if not dropped:
            # Blanks before the colon (RFC 5322 §4.5) end the header section for many
            # parsers: the field is written without them.
            name = name.rstrip(b" \t")
            out.append(Field(name.decode("ascii").lower(), name + b":" + rest + b"\r\n"))
    return out


def read_header(path: Path) -> bytes:
    """The header section of the message file ``path`` (at most :data:`MAX_HEADER` octets).
    Blocks: call it in a thread."""
    with path.open("rb") as f:
        data = f.read(MAX_HEADER)
    return data[: header_end(data)]


def read_fields(path: Path) -> list[Field]:
    """The header fields of the message file ``path`` (:func:`read_header`, then
    :func:`parse_fields`).  Blocks: call it in a thread."""
    return parse_fields(read_header(path))


def first(fields: Iterable[Field], name: str) -> Field | None:
    """The first field called ``name`` (lower case)."""
    return next((f for f in fields if f.name == name), None)


def decoded(value: str) -> str:
    """``value`` with RFC 2047 encoded words decoded; as it is when they are broken."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.MessageError):
        return value


def shown(found: Field | None, limit: int = 200) -> str:
    """A field's decoded value fit to show in a notice: one line of at most ``limit``
    characters, control characters as blanks, octets that are not UTF-8 as U+FFFD."""
    if found is None:
        return ""
    text = clean(decoded(found.value))
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


def addresses(value: str) -> list[tuple[str, str]]:
    """The (decoded display name, address) pairs of an address field's value, group syntax
    and all; addresses without ``@`` are left out.  A value the parser cannot take (longer
    than :data:`MAX_ADDRESS_FIELD`, or hostile: deeply nested comments or groups) names no
    address: it is never guessed at."""
    if len(value) > MAX_ADDRESS_FIELD:
        return []
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:  # RecursionError on deeply nested comments or groups, ValueError…
        return []
    return [(clean(decoded(name)), clean(addr)) for name, addr in pairs if "@" in addr]


def clean(text: str) -> str:
    """``text`` with octets that were not UTF-8 (kept as surrogates) as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def field(name: str, value: bytes) -> bytes:
    """A new field ``Name: value`` with CRLF (``value`` already folded if need be)."""
    return name.encode("ascii") + b": " + value + b"\r\n"
