"""DKIM signing of outbound mail (RFC 6376, RFC 8463) with dkimpy and the keys of
:mod:`ourmail.secure.dkimkeys`.

Which domain signs (RFC 6376 §2.4 lets any domain take responsibility; DMARC, RFC 7489 §3.1.1,
counts only a signature whose ``d=`` aligns with the ``From:`` domain):

1. mail written here (submission, DSNs): the ``From:`` domain, or a parent of it (relaxed
   alignment); failing that the envelope sender's domain; failing that the host name's;
2. forwarded mail (``forwarded``): only the host name's domain (or a parent of it), and
   not at all when that domain aligns with the ``From:`` domain: a message that arrived
   from elsewhere claiming to be from one of our domains never leaves with a signature
   that would make it pass DMARC.

Every active key of the chosen domain signs (RFC 8463 §6: RSA and Ed25519 side by side),
``c=relaxed/relaxed``, over :data:`SIGNED` (the fields present) with ``From`` oversigned
(RFC 6376 §8.15: one more ``from`` than present, so none can be added).

dkimpy parses the message, selects and canonicalizes the fields and the body (the part that
is easy to get subtly wrong); the signature itself is made with ``cryptography``, because
dkimpy's RSA is pure Python (about 12 ms a signature, holding the interpreter lock, so the
reactor would stall while a queue thread signs) while OpenSSL's takes about 1 ms and
releases it.  The tag list and its folding follow RFC 6376 §3.5 and §3.7.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterator

import attrs
import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from dkim.canonicalization import CanonicalizationPolicy
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.interfaces import IMessageSigner
from ourmail.secure.dkimkeys import DKIMKey, KeyError_, KeyStore

log = Logger()

#: RFC 6376 §5.4.1's list, with the List-* fields (RFC 2369, RFC 2919, RFC 8058).
SIGNED = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
_ALGORITHM = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
#: RFC 5322 §2.1.1: lines of at most 78 characters; the header is folded before that.
WIDTH = 76
_FROM = re.compile(rb"(?im)^from[ \t]*:((?:.*)(?:\r?\n[ \t].*)*)")
_FOLD = re.compile(rb"\r?\n")
_COMMENT = re.compile(rb"\((?:[^()\\]|\\.)*\)")
_ANGLE = re.compile(rb"<([^<>]*)>")
_DOMAIN = re.compile(rb"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
#: How long a domain's key list is trusted before its folder is looked at again (seconds).
RECHECK = 2.0
#: Header bytes read to find the From: field (the whole header section is rarely larger).
_HEAD_LIMIT = 256 << 10


def header_names(head: bytes) -> list[str]:
    """The field names of a header section, lower case, in order."""
    names = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") or b":" not in line:
            continue
        names.append(line.split(b":", 1)[0].strip().decode("ascii", "replace").lower())
    return names


def signed_fields(names: list[str]) -> list[bytes]:
    """The ``h=`` list: each field of :data:`SIGNED` once per instance, and ``from`` once more."""
    wanted = [n.encode() for n in names if n in SIGNED]
    return [*wanted, b"from"]


def head_of(content: bytes) -> bytes:
    """The header section of ``content`` (up to the blank line)."""
    end = content.find(b"\r\n\r\n", 0, _HEAD_LIMIT)
    if end < 0:
        end = content.find(b"\n\n", 0, _HEAD_LIMIT)
    return content[: end + 2] if end >= 0 else content[:_HEAD_LIMIT]


def from_domain(head: bytes) -> str | None:
    """The domain of the single ``From:`` address (RFC 5322 §3.6.2), or None when there is
    no From, more than one, or a From naming several authors (no single domain to sign for)."""
    fields = _FROM.findall(head)
    if len(fields) != 1:
        return None
    value = _COMMENT.sub(b" ", _FOLD.sub(b" ", fields[0]))
    bracketed = _ANGLE.findall(value)
    addresses = bracketed or [a for a in value.split(b",") if b"@" in a]
    if len(addresses) != 1:
        return None
    domain = addresses[0].rpartition(b"@")[2].strip().rstrip(b".").lower()
    return domain.decode("utf-8", "replace") if _DOMAIN.fullmatch(domain) else None


@attrs.frozen
class ActiveKey:
    """A key that signs now: its file, and the private key loaded for ``cryptography`` and
    for dkimpy (ARC sealing)."""

    key: DKIMKey
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    dkimpy: bytes

    @classmethod
    def load(cls, key: DKIMKey) -> ActiveKey:
        return cls(key, key.private(), key.dkimpy_key())


def _fold(tokens: list[bytes]) -> bytes:
    """``tokens`` joined by single spaces, folded (CRLF SP) before :data:`WIDTH` columns
    (after the 16 of ``DKIM-Signature: ``).  Relaxed canonicalization (RFC 6376 §3.4.2)
    turns each fold back into the one space, so folding never changes what is signed."""
    lines: list[bytes] = []
    line = b""
    used = len(b"DKIM-Signature:")
    for token in tokens:
        if line and used + len(line) + 1 + len(token) > WIDTH:
            lines.append(line)
            line, used = token, 0
        else:
            line = line + b" " + token if line else token
    lines.append(line)
    return b"\r\n ".join(lines)


def dkim_signature(
    headers: list[tuple[bytes, bytes]],
    body_hash: bytes,
    include: list[bytes],
    domain: str,
    active: ActiveKey,
    now: int,
) -> bytes:
    """One ``DKIM-Signature:`` field (CRLF-terminated) for the parsed message ``headers``
    (dkimpy's ``rfc822_parse``) and the SHA-256 of the relaxed body, signing the fields
    ``include``."""
    algorithm = _ALGORITHM[active.key.algorithm]
    names = b" : ".join(include).split(b" ")
    tokens = [
        b"v=1;",
        b"a=" + algorithm + b";",
        b"c=relaxed/relaxed;",
        b"d=" + domain.encode() + b";",
        b"s=" + active.key.selector.encode() + b";",
        b"t=%d;" % now,
        b"h=" + names[0],
        *names[1:-1],
        names[-1] + b";",
        b"bh=" + base64.b64encode(body_hash) + b";",
        b"b=",
    ]
    unsigned = _fold(tokens)
    # RFC 6376 §3.7: the selected fields, then this field with an empty b= and no CRLF.
    data = b"".join(
        name + b":" + value
        for name, value in dkim.select_headers(RELAXED.canonicalize_headers(headers), include)
    )
    ((name, value),) = RELAXED.canonicalize_headers([(b"DKIM-Signature", b" " + unsigned)])
    data += name + b":" + value.rstrip(b"\r\n")
    if isinstance(active.private, ed25519.Ed25519PrivateKey):
        # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data.
        signature = active.private.sign(hashlib.sha256(data).digest())
    else:
        signature = active.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
    encoded = base64.b64encode(signature)
    chunks = [encoded[i : i + WIDTH - 4] for i in range(0, len(encoded), WIDTH - 4)]
    return b"DKIM-Signature: " + unsigned + b"".join(b"\r\n  " + c for c in chunks) + b"\r\n"


def parents(domain: str) -> Iterator[str]:
    """``a.b.example.org``, ``b.example.org``, ``example.org`` (never a single label)."""
    labels = domain.lower().rstrip(".").split(".")
    for i in range(len(labels) - 1):
        yield ".".join(labels[i:])


def aligned(domain: str, author: str) -> bool:
    """Whether a signature by ``domain`` might pass DMARC for ``author`` (RFC 7489 §3.1.1
    relaxed alignment: the same organizational domain).  Without the public suffix list this
    errs on the safe side: domains ending in the same two labels count as aligned
    (``mail.example.org`` and ``sales.example.org``, but also ``a.co.uk`` and ``b.co.uk``),
    so a forwarder's signature is left off rather than risk a DMARC pass."""
    return domain.split(".")[-2:] == author.split(".")[-2:]


@implementer(IMessageSigner)
class DKIMSigner:
    """Signs with the keys under ``<data>/dkim``; keys added or retired by ``ourmail dkim``
    are noticed at the next message (the domain folder's modification time)."""

    def __init__(self, keys: KeyStore, hostname: str) -> None:
        self.keys = keys
        self.hostname = hostname.lower().rstrip(".")
        #: domain -> (checked at, folder mtime, keys)
        self._cache: dict[str, tuple[float, float, list[ActiveKey]]] = {}

    def active(self, domain: str) -> list[ActiveKey]:
        """The keys that sign for ``domain`` now (blocking: reads the folder when it
        changed)."""
        now = time.monotonic()
        cached = self._cache.get(domain)
        if cached is not None and now - cached[0] < RECHECK:
            return cached[2]
        try:
            stamp = os.stat(self.keys.root / domain).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            stamp = 0.0
        if cached is None or cached[1] != stamp:
            found: list[ActiveKey] = []
            try:
                if stamp:
                    found = [ActiveKey.load(key) for key in self.keys.keys(domain)]
            except (KeyError_, OSError) as e:
                log.error("dkim: keys of {domain} unusable: {e}", domain=domain, e=e)
            cached = (now, stamp, found)
        else:
            cached = (now, stamp, cached[2])
        self._cache[domain] = cached
        return cached[2]

    def signing_domain(self, head: bytes, sender: str, forwarded: bool) -> str | None:
        """The domain whose keys sign (see the module's notes), or None."""
        candidates: list[str] = []
        author = from_domain(head)
        if not forwarded:
            if author:
                candidates.append(author)
            if "@" in sender:
                candidates.append(sender.rpartition("@")[2])
        candidates.append(self.hostname)
        for candidate in candidates:
            for domain in parents(candidate):
                if self.active(domain):
                    if forwarded and (author is None or aligned(domain, author)):
                        return None
                    return domain
        return None

    def body_hash(self, content: bytes) -> bytes:
        """SHA-256 of the relaxed body (RFC 6376 §3.4.4, §3.7)."""
        _, body = dkim.rfc822_parse(content)
        return hashlib.sha256(RELAXED.canonicalize_body(body)).digest()

    def signature(
        self,
        content: bytes,
        sender: str,
        forwarded: bool = False,
        body_hash: bytes | None = None,
    ) -> bytes:
        head = head_of(content)
        domain = self.signing_domain(head, sender, forwarded)
        if domain is None:
            return b""
        names = header_names(head)
        if "from" not in names:  # RFC 6376 §6.1.1: From is required; nothing to sign
            return b""
        include = signed_fields(names)
        headers, body = dkim.rfc822_parse(content)
        if body_hash is None:
            body_hash = hashlib.sha256(RELAXED.canonicalize_body(body)).digest()
        now = int(time.time())
        fields = [
            dkim_signature(headers, body_hash, include, domain, active, now)
            for active in self.active(domain)
        ]
        return b"".join(fields)

    def sign(self, content: bytes, sender: str, forwarded: bool = False) -> Deferred[bytes]:
        return deferToThread(self.signature, content, sender, forwarded)
