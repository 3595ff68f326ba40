"""dkimpy made faster gives dkimpy's results: OpenSSL's RSA gives the very signature
dkimpy's own would, a key record parsed once is the same key, and the quick relaxed
canonicalisation is dkimpy's on any mix of text, spaces, tabs and line ends."""

from __future__ import annotations

import base64
import hashlib
import random
import re

import dkim
import dkim.canonicalization
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ourmail.secure import dkimspeed


def test_same_signature_as_dkimpy_and_installed_for_arc() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    parsed = dkim.crypto.parse_pem_private_key(pem)
    for name in ("sha256", "sha1"):
        digest = hashlib.new(name, b"message")
        assert dkimspeed.sign(digest, parsed) == dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, parsed)
    public = dkim.crypto.parse_public_key(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    digest = hashlib.sha256(b"message")
    signature = dkimspeed.sign(digest, parsed)
    assert dkimspeed.verify(digest, signature, public)
    assert dkim.crypto.RSASSA_PKCS1_v1_5_verify(digest, signature, public)
    assert not dkimspeed.verify(hashlib.sha256(b"other"), signature, public)
    assert not dkimspeed.verify(digest, signature[:-1] + b"\0", public)
    assert not dkimspeed.verify(digest, b"short", public)
    dkimspeed.install()
    assert dkim.RSASSA_PKCS1_v1_5_sign is dkimspeed.sign
    assert dkim.RSASSA_PKCS1_v1_5_verify is dkimspeed.verify


def test_quick_canonicalisation_is_dkimpys() -> None:
    original = dkim.canonicalization.Relaxed
    dkimpy_trailing = dkimspeed._TRAILING.pattern  # the same pattern as dkimpy's
    assert dkimpy_trailing == b"[\t ]+\r\n"
    pieces = [b"a", b"b c", b" ", b"  ", b"\t", b"\r\n", b" \r\n", b"\t\r\n", b"x\t y"]
    rng = random.Random(7)
    for _ in range(3000):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        assert dkimspeed.compress_whitespace(text) == dkim.canonicalization.re.sub(
            b"[\t ]+", b" ", text
        )
        assert dkimspeed.strip_trailing_whitespace(text) == dkim.canonicalization.re.sub(
            b"[\t ]+\r\n", b"\r\n", text
        )
    assert original is dkim.canonicalization.Relaxed


def test_a_key_record_is_parsed_once_and_a_bad_one_named() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    first = dkimspeed.evaluate_pk("s._domainkey.x.test", record)
    assert dkimspeed.evaluate_pk("s._domainkey.x.test", record) is first
    assert first[0]["modulus"] == key.public_key().public_numbers().n
    assert tuple(dkimspeed._evaluate_pk("s._domainkey.x.test", record)) == first
    with pytest.raises(dkim.KeyFormatError, match=r"bad\._domainkey"):
        dkimspeed.evaluate_pk("bad._domainkey.x.test", b"")


def test_quick_message_parse_is_dkimpys() -> None:
    pieces = [b"A: b", b"From: x", b" folded", b"\tfold", b"\r\n", b"\r\n\r\n", b"\n", b"\r",
              b"body text", b"From mbox", b":", b"  "]  # fmt: skip
    rng = random.Random(11)
    for _ in range(5000):
        message = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 25)))
        try:
            expected: object = dkimspeed._rfc822_parse(message)
        except (dkim.MessageFormatError, IndexError):  # (dkimpy's on a fold with no field)
            expected = "error"
        try:
            got: object = dkimspeed.rfc822_parse(message)
        except dkim.MessageFormatError:
            got = "error"
        assert got == expected, message
        for value in (message, message.replace(b"\n", b"\r\n")):
            assert dkimspeed.unfold_header_value(value) == re.sub(b"\r?\n", b"", value)
