"""Keys and signatures for the DKIM and DMARC tests: dkimpy, and the real peers Perl
Mail::DKIM (``dkimproxy-sign``) and OpenDKIM (``opendkim-testmsg``, rsa-sha1 only)."""

from __future__ import annotations

import base64
import functools
import subprocess
from pathlib import Path

import dkim
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from peers.dns import TestZone


@functools.cache
def rsa_key(bits: int = 2048) -> tuple[bytes, str]:
    """A PEM (PKCS#1) private key and its DNS TXT record."""
    # cryptography refuses to make keys under 1024 bits; openssl still does (for the tests
    # of RFC 8301 §3.2).
    pem = subprocess.run(
        ["openssl", "genrsa", "-traditional", str(bits)], capture_output=True, check=True
    ).stdout
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


@functools.cache
def ed25519_key() -> tuple[bytes, str]:
    """A base64 Ed25519 seed (dkimpy's private key form) and its TXT record (RFC 8463 §4)."""
    key = nacl.signing.SigningKey.generate()
    public = base64.b64encode(bytes(key.verify_key)).decode()
    return base64.b64encode(bytes(key)), f"v=DKIM1; k=ed25519; p={public}"


def publish(zone: TestZone, domain: str, selector: str, record: str) -> None:
    """The key record, split into 255-byte strings as DNS needs (RFC 6376 §3.6.2.2)."""
    zone.set_txt(
        f"{selector}._domainkey.{domain}",
        [record[i : i + 255].encode() for i in range(0, len(record), 255)],
    )


def sign(
    message: bytes,
    domain: str,
    selector: str,
    algorithm: str = "rsa-sha256",
    canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed"),
    length: bool = False,
    key: bytes | None = None,
) -> bytes:
    """``message`` with a dkimpy DKIM-Signature on top."""
    if key is None:
        key = ed25519_key()[0] if algorithm == "ed25519-sha256" else rsa_key()[0]
    header = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key,
        signature_algorithm=algorithm.encode(),
        canonicalize=canonicalize,
        include_headers=[b"from", b"to", b"subject"],
        length=length,
    )
    return bytes(header) + message


def _pem_body(pem: bytes) -> bytes:
    return b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))


def mail_dkim_sign(message: bytes, domain: str, selector: str, method: str, tmp: Path) -> bytes:
    """``message`` signed by Perl Mail::DKIM (``dkimproxy-sign``, rsa-sha256)."""
    key = tmp / "mail-dkim.key"
    key.write_bytes(_pem_body(rsa_key()[0]) + b"\n")
    out = subprocess.run(
        [
            "dkimproxy-sign",
            "--domain",
            domain,
            "--selector",
            selector,
            "--key",
            str(key),
            "--method",
            method,
        ],
        input=message,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return out.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + message


def opendkim_sign(message: bytes, domain: str, selector: str, tmp: Path) -> bytes:
    """``message`` signed by OpenDKIM's ``opendkim-testmsg`` (always rsa-sha1)."""
    key = tmp / "opendkim.key"
    key.write_bytes(rsa_key()[0])
    out = subprocess.run(
        ["opendkim-testmsg", "-C", "-d", domain, "-s", selector, "-k", str(key)],
        input=message,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return out.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
