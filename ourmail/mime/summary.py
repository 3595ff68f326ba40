"""What the index keeps of a message so IMAP never reopens it for metadata.

A :class:`Summary` holds the RFC 3501 ENVELOPE, BODYSTRUCTURE and BODY renderings and the
decoded values of the headers clients search on, computed once when the message is stored.
"""

from __future__ import annotations

import binascii
import email.errors
import email.header
import json

from ourmail.mime import structure

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
    """ENVELOPE, BODYSTRUCTURE and BODY as IMAP renders them, and the decoded search headers.

    In the cache a summary is one record, ``base64(envelope) TAB base64(bodystructure) TAB
    base64(body) TAB json(headers)``: FETCH ENVELOPE needs three base64 decodes (C speed), and
    the headers are only parsed when a SEARCH or SORT asks for them."""

    __slots__ = ("_headers", "_raw_headers", "body", "bodystructure", "envelope")

    def __init__(
        self,
        envelope: bytes,
        bodystructure: bytes,
        body: bytes,
        headers: dict[str, str] | None = None,
        raw_headers: bytes = b"{}",
    ) -> None:
        self.envelope, self.bodystructure, self.body = envelope, bodystructure, body
        self._headers = headers
        self._raw_headers = raw_headers

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
        mine = (self.envelope, self.bodystructure, self.body, self.headers)
        return mine == (other.envelope, other.bodystructure, other.body, other.headers)

    __hash__ = None  # type: ignore[assignment]

    def to_record(self) -> bytes:
        """The cache record (no tab or newline inside a field)."""
        parts = [
            binascii.b2a_base64(x, newline=False)
            for x in (self.envelope, self.bodystructure, self.body)
        ]
        return b"\t".join([*parts, json.dumps(self.headers, separators=(",", ":")).encode()])

    @classmethod
    def from_record(cls, raw: bytes) -> Summary:
        """A summary from :meth:`to_record`'s bytes, or from the JSON of older caches;
        ValueError if it is damaged."""
        if raw.startswith(b"{"):
            return cls._from_json(raw)
        parts = raw.split(b"\t")
        if len(parts) != 4 or not parts[3].startswith(b"{") or not parts[3].endswith(b"}"):
            raise ValueError("damaged summary record")
        try:
            e, s, b = (binascii.a2b_base64(p, strict_mode=True) for p in parts[:3])
        except binascii.Error as err:
            raise ValueError("damaged summary record") from err
        return cls(e, s, b, raw_headers=parts[3])

    @classmethod
    def _from_json(cls, raw: bytes) -> Summary:
        d = json.loads(raw)
        headers = d["h"]
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("header values must be strings")
        return cls(
            d["e"].encode("latin-1"), d["s"].encode("latin-1"), d["b"].encode("latin-1"), headers
        )


def summarize(data: bytes) -> Summary:
    """The summary of a whole message (CRLF line endings)."""
    part = structure.parse(data)
    headers = {}
    for name in SEARCH_HEADERS:
        value = header_values(part, name)
        if value or any(f == name for f, _ in part.fields):
            headers[name] = value
    return Summary(
        structure.envelope(part),
        structure.bodystructure(part, data, extensible=True),
        structure.bodystructure(part, data, extensible=False),
        headers,
    )
