"""Signed chain heads: ``<data>/vault/heads.log`` (docs/vault.md#verify-and-export).

A signed head is the vault's last record (seq and hash) at a time, signed with the server's
TLS private key, as the text ``ourmail-vault-head <seq> <hash> <utc time>``.  Each is one
JSON line of ``heads.log`` (also written to the server's log), with the base64 signature
and the SHA-256 fingerprint of the certificate; the certificate itself is kept as
``<data>/vault/certs/<fingerprint>.pem``, so a head signed before a renewal can still be
checked.  An auditor holding a head signed on a day checks that a later vault or export
still has that record with that hash (``ourmail vault verify --anchors``).

Signatures: RSA keys sign with PKCS #1 v1.5 and SHA-256 (RFC 8017 §8.2), EC keys with ECDSA
and SHA-256 (FIPS 186-4), Ed25519 keys as RFC 8032 says.  Blocking: run in a thread.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from ourmail.fsutil import fsync_dir, write_atomic

#: The log of signed heads, and the folder of the certificates that signed them, in the vault.
HEADS_LOG = "heads.log"
CERTS = "certs"
#: Longest line of heads.log read (a damaged file cannot make the reader allocate more).
MAX_LINE = 64 * 1024


class HeadError(Exception):
    """A head that cannot be signed (no usable key) or a heads file that cannot be read."""


@attrs.frozen
class SignedHead:
    """One signed chain head, as a line of heads.log holds it."""

    seq: int
    hash: str
    time: str
    signature: str
    fingerprint: str
    algorithm: str

    @property
    def text(self) -> bytes:
        """What is signed."""
        return f"ourmail-vault-head {self.seq} {self.hash} {self.time}".encode()

    def line(self) -> str:
        """The JSON line (sorted keys, no spaces)."""
        fields = attrs.asdict(self)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, line: str) -> SignedHead:
        """A head from its JSON line (HeadError when it is not one)."""
        try:
            fields = json.loads(line)
            return cls(
                seq=int(fields["seq"]),
                hash=str(fields["hash"]),
                time=str(fields["time"]),
                signature=str(fields["signature"]),
                fingerprint=str(fields["fingerprint"]),
                algorithm=str(fields["algorithm"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise HeadError(f"not a signed head: {e}") from None


def fingerprint(certificate: x509.Certificate) -> str:
    """The certificate's SHA-256 fingerprint (hex of its DER)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def sign(
    vault: Path,
    seq: int,
    digest: str,
    certificate_path: Path,
    key_path: Path,
    now: datetime.datetime | None = None,
) -> SignedHead:
    """Sign head ``seq``/``digest`` with the key, append it to heads.log (fsynced) and keep
    the certificate beside it; the head is returned for the server's log."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
        key = load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise HeadError(f"the TLS key or certificate cannot be read: {e}") from None
    when = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    head = SignedHead(seq, digest, when.strftime("%Y-%m-%dT%H:%M:%SZ"), "", "", "")
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm, signature = (
            "rsa-sha256",
            key.sign(head.text, padding.PKCS1v15(), hashes.SHA256()),
        )
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm, signature = "ecdsa-sha256", key.sign(head.text, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm, signature = "ed25519", key.sign(head.text)
    else:
        raise HeadError(f"a {type(key).__name__} cannot sign vault heads")
    print_ = fingerprint(certificate)
    head = attrs.evolve(
        head,
        signature=base64.b64encode(signature).decode(),
        fingerprint=print_,
        algorithm=algorithm,
    )
    certs = vault / CERTS
    kept = certs / f"{print_}.pem"
    if not kept.exists():
        certs.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(kept, certificate.public_bytes(Encoding.PEM), 0o644)
    _append(vault / HEADS_LOG, head.line())
    return head


def _append(path: Path, line: str) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def read(path: Path) -> Iterator[SignedHead]:
    """Every head of a heads file, in order (HeadError naming the line that is not one)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(iter(lambda: f.readline(MAX_LINE), ""), 1):
                if not line.strip():
                    continue
                try:
                    yield SignedHead.parse(line)
                except HeadError as e:
                    raise HeadError(f"{path}, line {number}: {e}") from None
    except OSError as e:
        raise HeadError(f"{path} cannot be read: {e.strerror}") from None


def certificate_for(head: SignedHead, folders: tuple[Path, ...]) -> x509.Certificate | None:
    """The certificate that signed ``head``, from the first folder holding it."""
    for folder in folders:
        try:
            certificate = x509.load_pem_x509_certificate(
                (folder / f"{head.fingerprint}.pem").read_bytes()
            )
        except (OSError, ValueError):
            continue
        if fingerprint(certificate) == head.fingerprint:
            return certificate
    return None


def signature_valid(head: SignedHead, certificate: x509.Certificate) -> bool:
    """Whether ``head``'s signature is the certificate's key's, over the head's text."""
    try:
        signature = base64.b64decode(head.signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    key: Any = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and head.algorithm == "rsa-sha256":
            key.verify(signature, head.text, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey) and head.algorithm == "ecdsa-sha256":
            key.verify(signature, head.text, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey) and head.algorithm == "ed25519":
            key.verify(signature, head.text)
        else:
            return False
    except InvalidSignature:
        return False
    return True
