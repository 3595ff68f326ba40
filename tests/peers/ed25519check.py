"""A second, minimal verifier of ``ed25519-sha256`` DKIM signatures (RFC 8463, relaxed/relaxed
only), written here from RFC 6376 §3.4.2, §3.4.4 and §3.7 with ``cryptography``: Debian 12's
Mail::DKIM does not know Ed25519 ("unsupported algorithm"), and our signer canonicalizes with
dkimpy, so dkimpy alone would be no independent judge."""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    value = re.sub(rb"\r\n(?=[ \t])", b"", value)
    value = re.sub(rb"[ \t]+", b" ", value).strip(b" \t\r\n")
    return name.strip().lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def verify(message: bytes, public_key_b64: str, index: int = 0) -> bool:
    """Whether the ``index``-th ed25519-sha256 DKIM-Signature of ``message`` verifies."""
    head, _, body = message.partition(b"\r\n\r\n")
    fields = [tuple(f.split(b":", 1)) for f in re.split(rb"\r\n(?![ \t])", head) if b":" in f]
    sigs = [(n, v) for n, v in fields if n.lower() == b"dkim-signature" and b"ed25519" in v]
    name, value = sigs[index]
    tags = {
        k.strip(): re.sub(rb"\s+", b"", v)
        for k, _, v in (t.partition(b"=") for t in value.split(b";") if b"=" in t)
    }
    if tags[b"c"] != b"relaxed/relaxed" or tags[b"a"] != b"ed25519-sha256":
        return False
    if base64.b64decode(tags[b"bh"]) != hashlib.sha256(_relaxed_body(body)).digest():
        return False
    remaining = list(fields)
    data = b""
    for wanted in tags[b"h"].lower().split(b":"):
        for i in range(len(remaining) - 1, -1, -1):  # RFC 6376 §5.4.2: from the bottom up
            if remaining[i][0].strip().lower() == wanted:
                data += _relaxed_header(*remaining.pop(i)) + b"\r\n"
                break
    unsigned = re.sub(rb"(;\s*b=)[^;]*", rb"\1", value)
    data += _relaxed_header(name, unsigned)
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    try:
        key.verify(base64.b64decode(tags[b"b"]), hashlib.sha256(data).digest())
    except InvalidSignature:
        return False
    return True
