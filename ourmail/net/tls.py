"""TLS contexts, TLS 1.2 and newer only: the servers' (from PEM files) and the outbound client's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.config import ConfigError

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

log = Logger()


def server_context(cert_path: Path, key_path: Path) -> IOpenSSLServerConnectionCreator:
    """A context factory for STARTTLS and implicit TLS from a PEM chain and key.

    The first certificate in ``cert_path`` is the server's; any that follow are sent as the chain.
    """
    try:
        certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
        key = load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(
            f"cannot load the TLS certificate {cert_path} or key {key_path}: {e}"
        ) from e
    options = ssl.CertificateOptions(
        privateKey=key,
        certificate=certs[0],
        extraCertChain=certs[1:],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    try:  # OpenSSL pairs key and certificate only here; a mismatch must not wait for a client
        options.getContext()
    except SSL.Error as e:
        raise ConfigError(
            f"the TLS key {key_path} does not belong to the certificate {cert_path}"
        ) from e
    return options


@implementer(IOpenSSLContextFactory)
class ReloadableServerTLS:
    """The servers' TLS context, loaded from its PEM files again by :meth:`reload` (SIGHUP):
    connections made afterwards get the new certificate, sessions already open keep theirs."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path, self.key_path = cert_path, key_path
        self._current = server_context(cert_path, key_path)

    def reload(self) -> bool:
        """Load the files again; on an error keep the old certificate (and log why)."""
        try:
            self._current = server_context(self.cert_path, self.key_path)
        except ConfigError as e:
            log.error("TLS certificate not reloaded, the old one stays: {why}", why=str(e))
            return False
        log.info("TLS certificate reloaded from {path}", path=str(self.cert_path))
        return True

    def use(self, cert_path: Path, key_path: Path) -> bool:
        """Serve the pair at these paths from now on (a new ACME certificate), also after a
        SIGHUP; on an error keep the old files and certificate (and log why)."""
        try:
            self._current = server_context(cert_path, key_path)
        except ConfigError as e:
            log.error("TLS certificate not changed, the old one stays: {why}", why=str(e))
            return False
        self.cert_path, self.key_path = cert_path, key_path
        log.info("TLS certificate now from {path}", path=str(cert_path))
        return True

    def getContext(self) -> SSL.Context:
        return self._current.getContext()  # type: ignore[attr-defined,no-any-return]

    def not_after(self) -> float:
        """When the certificate in use expires (its notAfter, RFC 5280 §4.1.2.5), in POSIX
        seconds: the metrics' certificate expiry."""
        cert: x509.Certificate = self._current.certificate  # type: ignore[attr-defined]
        return cert.not_valid_after_utc.timestamp()


def opportunistic_client_context() -> ssl.CertificateOptions:
    """TLS for delivery to MX hosts: encrypt when offered, no certificate check (RFC 7435)."""
    return ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


def trust_root(ca_file: Path | None) -> IOpenSSLTrustRoot:
    """The certificates a verified connection must chain to: ``ca_file``'s, or the system's
    trusted roots (ConfigError when the file cannot be read)."""
    if ca_file is None:
        return ssl.platformTrust()
    try:
        pems = x509.load_pem_x509_certificates(ca_file.read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the CA certificates {ca_file}: {e}") from e
    return ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in pems]
    )


def verified_client_context(
    hostname: str, ca_file: Path | None, trust: IOpenSSLTrustRoot | None = None
) -> object:
    """TLS for a smart host or an MTA-STS peer: the certificate must match ``hostname`` and
    chain to ``trust`` (loaded once by the caller), else to ``ca_file``'s certificates (or the
    system's trusted roots)."""
    if trust is None:
        trust = trust_root(ca_file)
    minimum = {"raiseMinimumTo": ssl.TLSVersion.TLSv1_2}
    return ssl.optionsForClientTLS(hostname, trustRoot=trust, extraCertificateOptions=minimum)
