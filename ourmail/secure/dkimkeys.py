"""DKIM keys on disk: ``<data>/dkim/<domain>/<selector>.key`` (PEM, mode 0600).

Every ``.key`` file of a domain signs (RFC 8463 §6 recommends signing with both RSA and
Ed25519 while verifiers learn Ed25519); ``ourmail dkim retire`` renames a key to
``<selector>.retired`` so it stops signing while its DNS record stays published for the
messages already sent.  Blocking (file access, key generation): call from a thread or the
admin command.
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.logger import Logger

from ourmail.fsutil import fsync_dir

log = Logger()

Algorithm = Literal["rsa", "ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = ("rsa", "ed25519")
#: RFC 8301 §3.2: at least 1024 bits, SHOULD 2048; 2048 is what every verifier takes.
RSA_BITS = 2048
#: RFC 6376 §3.1: a selector is a sub-domain (dot-separated DNS labels).
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
#: RFC 1035 §3.3.14: a TXT record is a sequence of strings of at most 255 bytes each.
TXT_CHUNK = 255


class KeyError_(Exception):
    """A key that cannot be made, found or read (printed to the admin as it is)."""


class KeyExists(KeyError_):
    """The selector is taken already (by a signing or a retired key)."""


@attrs.frozen
class Unreadable:
    """A ``.key`` (or ``.retired``) file that is no usable key: empty, not PEM, another
    algorithm, or not readable by the server."""

    domain: str
    selector: str
    path: Path
    reason: str
    active: bool


#: The unreadable key files already logged (each once per process, not on every page view).
_reported: set[Path] = set()


def report_unreadable(entry: Unreadable) -> None:
    """Log an unreadable key file, once per process."""
    if entry.path not in _reported:
        _reported.add(entry.path)
        log.error("dkim: key file unusable: {reason}", reason=entry.reason)


@attrs.frozen
class DKIMKey:
    """One key of one domain: the private key (PEM) and what signs with it."""

    domain: str
    selector: str
    algorithm: Algorithm
    pem: bytes
    path: Path
    active: bool = True

    def private(self) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
        key = serialization.load_pem_private_key(self.pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise KeyError_(f"{self.path}: neither an RSA nor an Ed25519 key")
        return key

    def dkimpy_key(self) -> bytes:
        """The private key as dkimpy takes it: PKCS#1 PEM for RSA, the base64 raw 32-byte
        seed for Ed25519 (RFC 8463 §3)."""
        key = self.private()
        if isinstance(key, ed25519.Ed25519PrivateKey):
            raw = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return base64.b64encode(raw)
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def public_value(self) -> str:
        """The ``p=`` tag (RFC 6376 §3.6.1): base64 of the SubjectPublicKeyInfo for RSA, of
        the raw 32-byte public key for Ed25519 (RFC 8463 §4.2)."""
        public = self.private().public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return base64.b64encode(raw).decode("ascii")

    def txt(self) -> str:
        """The key record's text (RFC 6376 §3.6.1)."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public_value()}"

    def txt_strings(self) -> list[str]:
        """:meth:`txt` cut into strings of at most 255 bytes (RFC 6376 §3.6.2.2: the
        verifier joins them without spaces)."""
        text = self.txt()
        return [text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)]

    def dns_record(self) -> str:
        """The zone-file line to publish: ``S._domainkey.D. IN TXT "..." "..."``."""
        strings = " ".join(f'"{s}"' for s in self.txt_strings())
        return f"{self.selector}._domainkey.{self.domain}. IN TXT {strings}"


def default_selector(algorithm: Algorithm, today: datetime.date | None = None) -> str:
    """``YYYYMM`` with the algorithm after it (``202611r``, ``202611e``): a new pair each
    rotation, and both algorithms of one month side by side."""
    day = today or datetime.datetime.now(datetime.UTC).date()
    return f"{day:%Y%m}{'e' if algorithm == 'ed25519' else 'r'}"


def check_name(domain: str, selector: str) -> None:
    """Refuse names that are not DNS labels (they become file names too)."""
    for name, value in (("domain", domain), ("selector", selector)):
        labels = value.split(".")
        if not value or not all(_LABEL.fullmatch(label) for label in labels):
            raise KeyError_(f"invalid {name} {value!r}: DNS labels of letters, digits and -")


class KeyStore:
    """The DKIM keys under ``<data>/dkim``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, domain: str) -> Path:
        return self.root / domain

    def generate(self, domain: str, selector: str, algorithm: Algorithm) -> DKIMKey:
        """Make a key pair, stored with mode 0600; refuses to replace an existing selector."""
        domain, selector = domain.lower().rstrip("."), selector.lower()
        check_name(domain, selector)
        folder = self._dir(domain)
        path = folder / f"{selector}.key"
        if path.exists() or path.with_suffix(".retired").exists():
            raise KeyExists(f"selector {selector} of {domain} exists already: choose another")
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        if algorithm == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written whole and fsynced under a temporary name, then linked to its own: link(2)
        # never replaces a name, so two makers of one selector get one key and one refusal,
        # and no reader ever sees a half-written key.  The directory is fsynced before the
        # key is reported made (nothing acknowledged is ever lost).
        fd, tmp = tempfile.mkstemp(prefix=f".{selector}.", suffix=".tmp", dir=folder)
        try:
            try:
                view = memoryview(pem)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, path)
        except FileExistsError:
            raise KeyExists(f"selector {selector} of {domain} exists already") from None
        finally:
            os.unlink(tmp)
        fsync_dir(folder)
        fsync_dir(self.root)
        return DKIMKey(domain, selector, algorithm, pem, path)

    def keys(self, domain: str | None = None, retired: bool = False) -> Iterator[DKIMKey]:
        """The keys (of ``domain``, or of all), active ones; retired ones too if asked.
        Raises :class:`KeyError_` at the first unusable key file."""
        for entry in self.entries(domain, retired):
            if isinstance(entry, Unreadable):
                raise KeyError_(entry.reason)
            yield entry

    def entries(
        self, domain: str | None = None, retired: bool = False
    ) -> Iterator[DKIMKey | Unreadable]:
        """As :meth:`keys`, but an unusable key file is an :class:`Unreadable` in its place
        (for lists that show every key whatever one file holds)."""
        if not self.root.is_dir():
            return
        folders = [self._dir(domain)] if domain else sorted(self.root.iterdir())
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.suffix == ".key" or (retired and path.suffix == ".retired"):
                    try:
                        yield self._load(folder.name, path)
                    except (KeyError_, OSError) as e:
                        reason = str(e) if isinstance(e, KeyError_) else f"{path}: {e.strerror}"
                        yield Unreadable(
                            folder.name, path.stem, path, reason, path.suffix == ".key"
                        )

    def _load(self, domain: str, path: Path) -> DKIMKey:
        pem = path.read_bytes()
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as e:  # TypeError: a key encrypted with a password
            raise KeyError_(f"{path}: not a PEM private key ({e})") from None
        algorithm: Algorithm = "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa"
        if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise KeyError_(f"{path}: neither an RSA nor an Ed25519 key")
        return DKIMKey(domain, path.stem, algorithm, pem, path, path.suffix == ".key")

    def retire(self, domain: str, selector: str) -> DKIMKey:
        """Stop signing with a key (kept, renamed ``.retired``)."""
        domain, selector = domain.lower().rstrip("."), selector.lower()
        check_name(domain, selector)
        path = self._dir(domain) / f"{selector}.key"
        if not path.exists():
            raise KeyError_(f"no active key {selector} for {domain}")
        target = path.with_suffix(".retired")
        path.rename(target)
        return self._load(domain, target)
