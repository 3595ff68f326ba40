"""SASL PLAIN (RFC 4616) and the base64 lines of a SASL exchange, as SMTP AUTH (RFC 4954),
IMAP AUTHENTICATE (RFC 3501 §6.2.2, RFC 4959) and POP3 AUTH (RFC 5034) carry them."""

from __future__ import annotations

import base64
import binascii

import attrs


def decode_base64(line: str | bytes) -> str | None:
    """A client's base64 SASL line as text; ``=`` is the empty response (RFC 4954 §4, RFC 4959
    §3, RFC 5034 §4); None if it is not base64 of UTF-8."""
    data = line.strip().encode() if isinstance(line, str) else line.strip()
    if data == b"=":
        return ""
    try:
        return base64.b64decode(data, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


@attrs.frozen
class Plain:
    """A PLAIN response: ``authzid NUL authcid NUL password``."""

    authzid: str
    authcid: str
    password: str

    @property
    def for_someone_else(self) -> bool:
        """The client asks to act as another user, which ourmail never allows."""
        return bool(self.authzid) and self.authzid != self.authcid


def decode_plain(line: str | bytes) -> Plain | None:
    """The PLAIN response in a base64 line, or None if it cannot be decoded."""
    text = decode_base64(line)
    parts = text.split("\0") if text is not None else []
    return Plain(*parts) if len(parts) == 3 else None
