"""IMAP literals of message content (RFC 3501 §4.3, RFC 3516 §4.2 literal8).

Small content becomes one bytes object; content of ``STREAM_AT`` octets or more becomes the
literal's header and the content itself, which the session streams as the connection drains.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from ourmail.mime.content import STREAM_AT, Content


@attrs.frozen
class NoNuls:
    """``content`` with each NUL replaced by 0x80, octet for octet (so its size is unchanged).

    RFC 3501 §9 (``CHAR8``) forbids NUL in a literal; a message with one (legal in a
    ``BINARYMIME`` or careless submission) is still served in BODY[] this way, as Dovecot
    does; BINARY[] (literal8) gives the octets as stored.
    """

    content: Content

    @property
    def size(self) -> int:
        return self.content.size

    def chunks(self) -> Iterator[bytes]:
        for chunk in self.content.chunks():
            yield chunk.replace(b"\x00", b"\x80") if b"\x00" in chunk else chunk


def literal_pieces(content: Content, binary: bool = False) -> list[bytes | Content]:
    """A literal for ``content``: one bytes object when small, else a header and the content
    to stream.  ``binary`` (BINARY responses) uses a literal8 when the data holds a NUL
    (RFC 3516 §4.2), and always when streamed, as the data is not scanned first; otherwise
    NULs are sent as 0x80 (:class:`NoNuls`)."""
    if not binary:
        content = NoNuls(content)
    if content.size >= STREAM_AT:
        return [b"%s{%d}\r\n" % (b"~" if binary else b"", content.size), content]
    data = b"".join(content.chunks())
    mark = b"~" if binary and b"\x00" in data else b""
    return [b"%s{%d}\r\n" % (mark, len(data)) + data]
