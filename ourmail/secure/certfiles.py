"""Where the ACME files live, which names the certificate must carry, and what one holds.

``<data>/tls/acme/``: ``account.key`` (the ACME account's key, PEM, 0600), ``cert.pem`` (the
certificate then its chain, PEM) and ``key.pem`` (its key, PEM, 0600), replaced as a pair by
:func:`store_pair` (docs/certificates.md).  ``renew-requested``: ``ourmail cert renew`` asks
the running server.  ``left-out.json``: the optional names whose validation failed lately
(name -> when), left off the certificate until :data:`OPTIONAL_RETRY` has passed.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterable, Mapping
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
from ourmail.fsutil import fsync_dir, write_atomic


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
    def new_certificate(self) -> Path:
        """A new certificate written before the pair is swapped in (:func:`store_pair`)."""
        return self.folder / "cert.pem.new"

    @property
    def new_key(self) -> Path:
        """A new key written before the pair is swapped in (:func:`store_pair`)."""
        return self.folder / "key.pem.new"

    @property
    def backoff(self) -> Path:
        """How many orders in a row failed, and when the last did (JSON; gone after one
        succeeds): the retry back-off outlives a restart."""
        return self.folder / "backoff.json"

    @property
    def renew_request(self) -> Path:
        """Left by ``ourmail cert renew`` for a running server: renew at the next SIGHUP."""
        return self.folder / "renew-requested"

    @property
    def left_out(self) -> Path:
        """The optional names left off after a failed validation, and when (JSON)."""
        return self.folder / "left-out.json"

    def request_renewal(self) -> None:
        """Ask the running server for a renewal at its next SIGHUP."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.renew_request, b"", 0o600)


#: How long an optional name whose validation failed stays off the certificate before the
#: next order tries it again (a missing one is no reason to renew before that).
OPTIONAL_RETRY = datetime.timedelta(days=7)


@attrs.frozen
class WantedNames:
    """The names the certificate should carry: ``required`` ones (an order without them
    fails) and ``optional`` ones (left off, for a while, when they do not validate)."""

    required: tuple[str, ...]
    optional: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        """Every name, the required first."""
        return (*self.required, *self.optional)


def wanted_names(settings: Settings, added: Iterable[str] = ()) -> WantedNames:
    """The certificate's names.  Required: the host name, then ``[acme] names``.  Optional,
    only when the ``web`` listener is on (as ``ourmail dns records`` recommends them):
    ``autoconfig.`` and ``mta-sts.`` of every domain, configured or ``added`` (``ourmail
    domain add``), which client autoconfiguration and RFC 8461 §3.3 need on HTTPS.  Each
    name once, in that order."""
    required = tuple(dict.fromkeys([settings.hostname, *settings.acme.names]))
    optional: list[str] = []
    if settings.listen.get("web"):
        for domain in dict.fromkeys([*settings.domains, *added]):
            optional += [f"autoconfig.{domain}", f"mta-sts.{domain}"]
    return WantedNames(required, tuple(n for n in dict.fromkeys(optional) if n not in required))


def read_left_out(path: Path) -> dict[str, datetime.datetime]:
    """The optional names left off and when their validation failed ({} when the file is
    missing or unreadable: every name is tried again)."""
    try:
        data = json.loads(path.read_text())
        return {str(n): datetime.datetime.fromisoformat(str(t)) for n, t in data.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def write_left_out(path: Path, left_out: Mapping[str, datetime.datetime]) -> None:
    """Store the optional names left off (atomically; the file goes when none are)."""
    if not left_out:
        path.unlink(missing_ok=True)
        return
    text = json.dumps({n: t.isoformat() for n, t in sorted(left_out.items())}, indent=1)
    write_atomic(path, text.encode(), 0o644)


def still_left_out(
    left_out: Mapping[str, datetime.datetime], wanted: WantedNames, now: datetime.datetime
) -> dict[str, datetime.datetime]:
    """The optional names whose failure is recent enough to leave them off for now."""
    return {n: t for n, t in left_out.items() if n in wanted.optional and now - t < OPTIONAL_RETRY}


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


@attrs.frozen
class Backoff:
    """The failed orders in a row, and when the last one failed (seconds since the epoch)."""

    failures: int
    last: float
    #: Not before then (seconds since the epoch): a CA's ``Retry-After``; 0: no such wish.
    not_before: float = 0.0


def read_backoff(path: Path) -> Backoff | None:
    """The stored back-off, or None (no failure since the last success, or unreadable)."""
    try:
        data = json.loads(path.read_text())
        return Backoff(int(data["failures"]), float(data["last"]), float(data.get("not_before", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_failure(path: Path, now: float, not_before: float = 0.0) -> Backoff:
    """Count one more failed order, at ``now`` (the CA asked to wait until ``not_before``);
    the new back-off."""
    before = read_backoff(path)
    state = Backoff((before.failures if before else 0) + 1, now, not_before)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = json.dumps(attrs.asdict(state))
    write_atomic(path, text.encode("ascii"), 0o644)
    return state


def store_pair(files: ACMEFiles, chain: bytes, key: bytes) -> None:
    """Replace the certificate and its key so that a crash at any point leaves the old pair
    or the new one: both are written durably as ``*.new`` first, then renamed (the key
    first); :func:`recover_pair` finishes an interrupted swap at the next start."""
    write_atomic(files.new_key, key, 0o600)
    write_atomic(files.new_certificate, chain, 0o644)
    os.replace(files.new_key, files.key)
    os.replace(files.new_certificate, files.certificate)
    fsync_dir(files.folder)


def recover_pair(files: ACMEFiles) -> bool:
    """After a crash in :func:`store_pair`: finish the swap when the new files left behind
    make a whole pair (with the key or certificate already renamed), else remove them and
    keep the old pair.  True when a new pair was put in place."""
    new_key, new_cert = files.new_key.exists(), files.new_certificate.exists()
    if not (new_key or new_cert):
        return False
    key = files.new_key if new_key else files.key
    cert = files.new_certificate if new_cert else files.certificate
    whole = pair_matches(cert, key)
    for new, final in ((files.new_key, files.key), (files.new_certificate, files.certificate)):
        if new.exists():
            if whole:
                os.replace(new, final)
            else:
                new.unlink()
    fsync_dir(files.folder)
    return whole


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
