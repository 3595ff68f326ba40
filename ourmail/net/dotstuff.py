"""Dot-stuffing of a message and its terminating ``.`` line: the same rule in SMTP DATA
(RFC 5321 §4.5.2) and in POP3 multi-line replies (RFC 1939 §3)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def stuffed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A CRLF message given in chunks, with every line that starts with ``.`` given one more,
    then the final ``.`` line; a ``CRLF .`` split between two chunks is found too."""
    tail = b"\r\n"  # the message starts a line
    for chunk in chunks:
        if not chunk:
            continue
        joined = (tail + chunk).replace(b"\r\n.", b"\r\n..")
        yield joined[len(tail) :]
        tail = (tail + chunk)[-2:]
    yield b".\r\n" if tail == b"\r\n" else b"\r\n.\r\n"


def dot_stuff(content: bytes) -> bytes:
    """:func:`stuffed` of a whole message."""
    return b"".join(stuffed((content,)))
