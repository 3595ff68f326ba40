"""What the index keeps of a message so IMAP never reopens it for metadata.

A :class:`Summary` holds the RFC 3501 ENVELOPE, BODYSTRUCTURE and BODY renderings and the
decoded values of the headers clients search on, computed once when the message is stored.
"""

from __future__ import annotations

import email.header
import json

import attrs

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
    except (ValueError, LookupError, UnicodeError):
        return value


def header_values(part: structure.Part, name: str) -> str:
    """All fields called ``name`` in a part, decoded, one per line."""
    values = [
        decode_header(raw.split(b":", 1)[1].decode("utf-8", "replace"))
        for fname, raw in part.fields
        if fname == name
    ]
    return "\n".join(values)


@attrs.frozen
class Summary:
    envelope: bytes
    bodystructure: bytes
    body: bytes
    #: lower-cased header name -> decoded values (only names present in the message)
    headers: dict[str, str]

    def to_json(self) -> str:
        return json.dumps(
            {
                "e": self.envelope.decode("latin-1"),
                "s": self.bodystructure.decode("latin-1"),
                "b": self.body.decode("latin-1"),
                "h": self.headers,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Summary:
        d = json.loads(text)
        return cls(
            envelope=d["e"].encode("latin-1"),
            bodystructure=d["s"].encode("latin-1"),
            body=d["b"].encode("latin-1"),
            headers={str(k): str(v) for k, v in d["h"].items()},
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
        envelope=structure.envelope(part),
        bodystructure=structure.bodystructure(part, data, extensible=True),
        body=structure.bodystructure(part, data, extensible=False),
        headers=headers,
    )
