"""Server TLS contexts: TLS 1.2 and newer only, from PEM files."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator

from ourmail.config import ConfigError


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
    return ssl.CertificateOptions(
        privateKey=key,
        certificate=certs[0],
        extraCertChain=certs[1:],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
