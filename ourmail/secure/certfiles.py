"""Where the ACME files live, which names the certificate must carry, and what one holds.

``<data>/tls/acme/``: ``account.key`` (the ACME account's key, PEM, 0600), ``cert.pem`` (the
certificate then its chain, PEM) and ``key.pem`` (its key, PEM, 0600); each written atomically
(docs/certificates.md).  ``renew-requested``: ``ourmail cert renew`` asks the running server.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import NameOID

from ourmail.config import Settings
from ourmail.fsutil import write_atomic


@attrs.frozen
class ACMEFiles:
    """The ACME files of one data directory."""

    folder: Path

    @classmethod
    def of(cls, data_dir: Path) -> ACMEFiles:
        """The files under ``<data_dir>/tls/acme``."""
        return cls(data_dir / "tls" / "acme")

    @property
    def account_key(self) -> Path:
        """The ACME account's private key (PEM)."""
        return self.folder / "account.key"

    @property
    def certificate(self) -> Path:
        """The certificate and its chain (PEM)."""
        return self.folder / "cert.pem"

    @property
    def key(self) -> Path:
        """The certificate's private key (PEM)."""
        return self.folder / "key.pem"

    @property
    def renew_request(self) -> Path:
        """Left by ``ourmail cert renew`` for a running server: renew at the next SIGHUP."""
        return self.folder / "renew-requested"

    def request_renewal(self) -> None:
        """Ask the running server for a renewal at its next SIGHUP."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.renew_request, b"", 0o600)


def wanted_names(settings: Settings, added: Iterable[str] = ()) -> tuple[str, ...]:
    """The certificate's names: the host name, ``autoconfig.`` and ``mta-sts.`` of every
    domain, configured or ``added`` (``ourmail domain add``): client autoconfiguration and
    RFC 8461 §3.3 need them on HTTPS; then ``[acme] names``; each once, in that order."""
    names = [settings.hostname]
    for domain in dict.fromkeys([*settings.domains, *added]):
        names += [f"autoconfig.{domain}", f"mta-sts.{domain}"]
    return tuple(dict.fromkeys([*names, *settings.acme.names]))


@attrs.frozen
class CertInfo:
    """What ``ourmail cert status`` and the renewal need to know of a certificate."""

    names: tuple[str, ...]
    subject: str
    issuer: str
    serial: int
    not_after: datetime.datetime

    @property
    def self_signed(self) -> bool:
        """Whether the certificate signed itself (subject = issuer)."""
        return self.subject == self.issuer

    def days_left(self, now: datetime.datetime) -> float:
        """Days until it expires (negative once it has)."""
        return (self.not_after - now).total_seconds() / 86400


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def cert_info(pem: bytes) -> CertInfo:
    """The first certificate of a PEM chain (ValueError if there is none)."""
    cert = x509.load_pem_x509_certificates(pem)[0]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        names=names,
        subject=_common_name(cert.subject),
        issuer=_common_name(cert.issuer),
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
    )


def read_info(path: Path) -> CertInfo | None:
    """The certificate in ``path``, or None when it is missing or unreadable."""
    try:
        return cert_info(path.read_bytes())
    except (OSError, ValueError):
        return None


def pair_matches(cert_path: Path, key_path: Path) -> bool:
    """Whether the key at ``key_path`` belongs to the first certificate at ``cert_path`` (a
    crash between writing the two leaves a pair that does not)."""
    try:
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        key = load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    form = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*form) == key.public_key().public_bytes(*form))


def renewal_reason(
    info: CertInfo | None, names: tuple[str, ...], renew_days: int, now: datetime.datetime
) -> str | None:
    """Why a new certificate is needed (None: the current one will do)."""
    if info is None:
        return "there is no ACME certificate yet"
    missing = sorted(set(names) - set(info.names))
    if missing:
        return f"the certificate lacks {', '.join(missing)}"
    left = info.days_left(now)
    if left <= renew_days:
        return f"the certificate expires in {left:.1f} days"
    return None
