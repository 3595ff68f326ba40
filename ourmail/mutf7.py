"""Modified UTF-7 (RFC 3501 §5.1.3), the encoding of IMAP4rev1 mailbox names and of Maildir++
folder directory names (as Dovecot writes them)."""

from __future__ import annotations

import base64
import re

_B64_RUN = re.compile(rb"&([^-]*)-")


def encode(name: str) -> bytes:
    """Unicode -> modified UTF-7 bytes."""
    out = bytearray()
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.extend(b"&" + base64.b64encode(raw).rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            pending.append(ch)
    flush()
    return bytes(out)


def decode(data: bytes) -> str:
    """Modified UTF-7 bytes -> Unicode; ValueError if malformed."""
    if any(b < 0x20 or b > 0x7E for b in data):
        raise ValueError("non-ASCII byte in modified UTF-7")
    out: list[str] = []
    pos = 0
    for m in _B64_RUN.finditer(data):
        out.append(data[pos : m.start()].decode("ascii"))
        run = m.group(1)
        if not run:
            out.append("&")
        else:
            if len(run) % 4 == 1 or not re.fullmatch(rb"[A-Za-z0-9+,]+", run):
                raise ValueError("bad base64 in modified UTF-7")
            raw = base64.b64decode(run.replace(b",", b"/") + b"=" * (-len(run) % 4))
            if len(raw) % 2:
                raise ValueError("odd UTF-16 in modified UTF-7")
            text = raw.decode("utf-16-be")
            if any(0x20 <= ord(c) <= 0x7E for c in text):
                raise ValueError("printable ASCII must not be base64-encoded")
            out.append(text)
        pos = m.end()
    rest = data[pos:].decode("ascii")
    if "&" in rest:
        raise ValueError("unterminated '&' in modified UTF-7")
    out.append(rest)
    return "".join(out)
