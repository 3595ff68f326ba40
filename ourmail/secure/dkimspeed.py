"""dkimpy, faster, with the same results: OpenSSL's RSA (through ``cryptography``) for its
signatures and their verification, key records parsed once, and a quick way through the
relaxed canonicalisation of text that has nothing to change.

dkimpy does RSA in pure Python: about 20 ms to sign with a 2048-bit key, holding the
interpreter lock in chunks of milliseconds (a thread sealing a forward stalls the reactor
meanwhile), and about 1 ms to verify, most of it turning integers into bytes one at a time.
:func:`install` puts OpenSSL in their place, once per process; the results are the same
(RFC 8017 RSASSA-PKCS1-v1_5 is deterministic, and a signature verifies or does not).

dkimpy also parses a key record's ASN.1 in pure Python for every signature it verifies
(about 0.15 ms for RSA-2048); :func:`install` keeps the last keys parsed, by their record
(a pure function of it: the same record always gives the same key).

dkimpy's relaxed body canonicalisation (RFC 6376 §3.4.4) runs two regular expressions over
the whole body, matching every single space of the text: some 0.4 ms for 4 KB of prose.
Most bodies have no white space at a line's end and no run of it: :func:`install` makes
dkimpy look for those first (a byte search) and skip the substitution when there are none.
Likewise dkimpy splits a whole message into lines with a regular expression (to accept bare
LF line ends too) and joins the body's lines again; a message with CRLF line ends only is
split at its header's end instead.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import dkim
import dkim.canonicalization
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
#: dkimpy's parsed private key (``dkim.crypto.parse_private_key``), in RFC 8017 order.
_FIELDS = ("modulus", "publicExponent", "privateExponent", "prime1", "prime2",
           "exponent1", "exponent2", "coefficient")  # fmt: skip


@functools.lru_cache(maxsize=64)
def _key(numbers: tuple[int, ...]) -> rsa.RSAPrivateKey:
    n, e, d, p, q, dmp1, dmq1, iqmp = numbers
    public = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, public).private_key()


def sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's ``RSASSA_PKCS1_v1_5_sign(hash, private_key)``, by OpenSSL."""
    key = _key(tuple(private_key[f] for f in _FIELDS))
    algorithm = _HASHES[digest.name.lower()]()
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


@functools.lru_cache(maxsize=1024)
def _public(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def verify(digest: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """dkimpy's ``RSASSA_PKCS1_v1_5_verify(hash, signature, public_key)``, by OpenSSL."""
    try:
        key = _public(public_key["modulus"], public_key["publicExponent"])
        algorithm = _HASHES[digest.name.lower()]()
        key.verify(signature, digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))
    except (InvalidSignature, ValueError):  # ValueError: a key OpenSSL will not use
        return False
    return True


#: dkimpy's own key record parser (``dkim.evaluate_pk(name, record)``).
_evaluate_pk = dkim.evaluate_pk


@functools.lru_cache(maxsize=1024)
def _parsed_key(record: bytes) -> tuple[Any, ...]:
    return tuple(_evaluate_pk("", record))


def evaluate_pk(name: str, record: bytes | str) -> tuple[Any, ...]:
    """dkimpy's ``evaluate_pk``: the key of a record, parsed once per record (the errors of
    a bad one name the record's DNS name, as dkimpy's do)."""
    if isinstance(record, str):
        record = record.encode("ascii", "replace")
    if len(record) > 8192:  # no real key record is that long: not kept
        return tuple(_evaluate_pk(name, record))
    try:
        return _parsed_key(record)
    except dkim.KeyFormatError:
        return tuple(_evaluate_pk(name, record))  # raises again, with the name


_TRAILING = re.compile(b"[\t ]+\r\n")
_RUNS = re.compile(b"[\t ]{2,}|\t")


def strip_trailing_whitespace(content: bytes) -> bytes:
    """dkimpy's ``strip_trailing_whitespace``: no white space before a line's CRLF."""
    if b" \r\n" not in content and b"\t\r\n" not in content:
        return content
    return _TRAILING.sub(b"\r\n", content)


def compress_whitespace(content: bytes) -> bytes:
    """dkimpy's ``compress_whitespace``: every run of spaces and tabs one space (a single
    space is already one: only runs of two or more, and tabs, change)."""
    if b"\t" not in content and b"  " not in content:
        return content
    return _RUNS.sub(b" ", content)


#: dkimpy's own message parser (``dkim.rfc822_parse``).
_rfc822_parse = dkim.rfc822_parse


def rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse``: the header fields as [name, value with CRLF] and the body.
    With CRLF line ends only (no bare LF), the header alone is split, and the body is the
    bytes after the empty line as they are, which is what dkimpy's rejoining gives.  A
    folded line with no field before it is a MessageFormatError (dkimpy's own parser trips
    over it with an IndexError)."""
    try:
        if message.startswith(b"\r\n") or message.count(b"\n") != message.count(b"\r\n"):
            return _rfc822_parse(message)  # type: ignore[no-any-return]
        end = message.find(b"\r\n\r\n")
        # No empty line: every line is the header's.
        head, body = (message, b"") if end < 0 else (message[:end], message[end + 4 :])
        headers, _ = _rfc822_parse(head)
    except IndexError as e:
        raise dkim.MessageFormatError("a folded line with no header field before it") from e
    return headers, body


def unfold_header_value(content: bytes) -> bytes:
    """dkimpy's ``unfold_header_value``: every LF gone, with the CR just before it."""
    return content.replace(b"\r\n", b"").replace(b"\n", b"")


def install() -> None:
    """Make dkimpy's DKIM and ARC signing and verifying use :func:`sign` and :func:`verify`,
    its key records be parsed once (:func:`evaluate_pk`), and its relaxed canonicalisation
    take the quick way (:func:`strip_trailing_whitespace`, :func:`compress_whitespace`)."""
    dkim.RSASSA_PKCS1_v1_5_sign = sign
    dkim.RSASSA_PKCS1_v1_5_verify = verify
    dkim.evaluate_pk = evaluate_pk
    dkim.canonicalization.strip_trailing_whitespace = strip_trailing_whitespace
    dkim.canonicalization.compress_whitespace = compress_whitespace
    dkim.canonicalization.unfold_header_value = unfold_header_value
    dkim.rfc822_parse = rfc822_parse
