"""OpenSSL's RSA (through ``cryptography``) for dkimpy's signatures.

dkimpy signs RSA in pure Python: about 20 ms for a 2048-bit key, holding the interpreter lock
in chunks of milliseconds, so a thread sealing a forward (ARC) stalls the reactor meanwhile.
:func:`install` puts an OpenSSL signer in its place, once per process; the result is the same
RFC 8017 RSASSA-PKCS1-v1_5 signature, byte for byte (PKCS #1 v1.5 is deterministic).
"""

from __future__ import annotations

import functools
from typing import Any

import dkim
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


def install() -> None:
    """Make dkimpy's DKIM and ARC signing use :func:`sign`."""
    dkim.RSASSA_PKCS1_v1_5_sign = sign
