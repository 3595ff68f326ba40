"""OpenSSL's RSA in dkimpy's place gives the very signature dkimpy's own would."""

from __future__ import annotations

import hashlib

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ourmail.secure import dkimrsa


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
        assert dkimrsa.sign(digest, parsed) == dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, parsed)
    public = dkim.crypto.parse_public_key(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    digest = hashlib.sha256(b"message")
    signature = dkimrsa.sign(digest, parsed)
    assert dkimrsa.verify(digest, signature, public)
    assert dkim.crypto.RSASSA_PKCS1_v1_5_verify(digest, signature, public)
    assert not dkimrsa.verify(hashlib.sha256(b"other"), signature, public)
    assert not dkimrsa.verify(digest, signature[:-1] + b"\0", public)
    assert not dkimrsa.verify(digest, b"short", public)
    dkimrsa.install()
    assert dkim.RSASSA_PKCS1_v1_5_sign is dkimrsa.sign
    assert dkim.RSASSA_PKCS1_v1_5_verify is dkimrsa.verify
