"""What the index keeps of a message so a protocol never reopens it for metadata.

A :class:`Summary` holds the envelope fields and body structure (:mod:`ourmail.mime.outline`)
and the decoded values of the headers clients search on, computed once when the message is
stored.  How a protocol shows them (IMAP ENVELOPE, BODYSTRUCTURE) is the protocol's business.
"""

from __future__ import annotations

import email.errors
import email.header
import json

from ourmail.mime import outline, structure

#: The first field of a cache record of the current format.
VERSION = b"2"

#: Headers whose decoded values are kept for SEARCH (RFC 3501 §6.4.4 keys and common HEADER ones).
SEARCH_HEADERS = (
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to", "reply-to", "sender",
)  # fmt: skip


def decode_header(value: str) -> str:
    """Unfold and decode RFC 2047 encoded words, best effort."""
    value = " ".join(value.split())
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


def header_values(part: structure.Part, name: str) -> str:
    """All fields called ``name`` in a part, decoded, one per line."""
    values = [
        decode_header(raw.split(b":", 1)[1].decode("utf-8", "replace"))
        for fname, raw in part.fields
        if fname == name
    ]
    return "\n".join(values)


class Summary:
    """A message's envelope, body structure and decoded search headers.

    In the cache a summary is one record, ``2 TAB envelope TAB body TAB headers``, each field
    JSON (:mod:`ourmail.mime.outline`).  The fields are decoded only when asked for, and
    :attr:`envelope_json` and :attr:`body_json` stay available as they were read: equal bytes
    mean an equal envelope or body, so a protocol may memoise its rendering on them.  Records
    of older formats (rendered IMAP text) are refused (ValueError), so the message is
    summarised again."""

    __slots__ = ("_body", "_envelope", "_headers", "_raw_headers", "body_json", "envelope_json")

    def __init__(
        self,
        envelope_json: bytes,
        body_json: bytes,
        headers: dict[str, str] | None = None,
        raw_headers: bytes = b"{}",
    ) -> None:
        self.envelope_json, self.body_json = envelope_json, body_json
        self._envelope: outline.Envelope | None = None
        self._body: outline.BodyPart | None = None
        self._headers = headers
        self._raw_headers = raw_headers

    @classmethod
    def of(
        cls, envelope: outline.Envelope, body: outline.BodyPart, headers: dict[str, str]
    ) -> Summary:
        """The summary of these values."""
        summary = cls(outline.envelope_json(envelope), outline.body_part_json(body), headers)
        summary._envelope, summary._body = envelope, body
        return summary

    @property
    def envelope(self) -> outline.Envelope:
        """The message's envelope fields."""
        if self._envelope is None:
            self._envelope = outline.envelope_from_json(self.envelope_json)
        return self._envelope

    @property
    def body(self) -> outline.BodyPart:
        """The message's body part tree."""
        if self._body is None:
            self._body = outline.body_part_from_json(self.body_json)
        return self._body

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased header name -> decoded values (only names present in the message)."""
        if self._headers is None:
            try:
                decoded = json.loads(self._raw_headers)
            except ValueError:
                decoded = {}
            ok = isinstance(decoded, dict) and all(isinstance(v, str) for v in decoded.values())
            self._headers = decoded if ok else {}
        return self._headers

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Summary):
            return NotImplemented
        mine = (self.envelope, self.body, self.headers)
        return mine == (other.envelope, other.body, other.headers)

    __hash__ = None  # type: ignore[assignment]

    def to_record(self) -> bytes:
        """The cache record (no newline inside; tabs only between fields)."""
        headers = json.dumps(self.headers, separators=(",", ":")).encode()
        return b"\t".join([VERSION, self.envelope_json, self.body_json, headers])

    @classmethod
    def from_record(cls, raw: bytes) -> Summary:
        """A summary from :meth:`to_record`'s bytes; ValueError if it is damaged or of an
        older format.  The envelope and body are checked when first asked for."""
        parts = raw.split(b"\t")
        if len(parts) != 4 or parts[0] != VERSION:
            raise ValueError("damaged summary record, or one of an older format")
        e, b, h = parts[1:]
        if not (
            e.startswith(b"[") and e.endswith(b"]") and b.startswith(b"[") and b.endswith(b"]")
        ):
            raise ValueError("damaged summary record")
        if not h.startswith(b"{") or not h.endswith(b"}"):
            raise ValueError("damaged summary record")
        return cls(e, b, raw_headers=h)


def summarize(data: bytes) -> Summary:
    """The summary of a whole message (CRLF line endings)."""
    part = structure.parse(data)
    headers = {}
    for name in SEARCH_HEADERS:
        value = header_values(part, name)
        if value or any(f == name for f, _ in part.fields):
            headers[name] = value
    return Summary.of(outline.envelope(part), outline.body_part(part, data), headers)
