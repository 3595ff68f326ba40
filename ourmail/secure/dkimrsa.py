"""OpenSSL's RSA (through ``cryptography``) for dkimpy's signatures and their verification.

dkimpy does RSA in pure Python: about 20 ms to sign with a 2048-bit key, holding the
interpreter lock in chunks of milliseconds (a thread sealing a forward stalls the reactor
meanwhile), and about 1 ms to verify, most of it turning integers into bytes one at a time.
:func:`install` puts OpenSSL in their place, once per process; the results are the same
(RFC 8017 RSASSA-PKCS1-v1_5 is deterministic, and a signature verifies or does not).
"""

from __future__ import annotations

import functools
from typing import Any

import dkim
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


def install() -> None:
    """Make dkimpy's DKIM and ARC signing and verifying use :func:`sign` and :func:`verify`."""
    dkim.RSASSA_PKCS1_v1_5_sign = sign
    dkim.RSASSA_PKCS1_v1_5_verify = verify
