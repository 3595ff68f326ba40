"""Server TLS contexts: TLS 1.2 and newer only, from PEM files."""

from __future__ import annotations

from pathlib import Path

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator


def server_context(cert_path: Path, key_path: Path) -> IOpenSSLServerConnectionCreator:
    """A context factory for STARTTLS and implicit TLS from a PEM chain and key.

    The first certificate in ``cert_path`` is the server's; any that follow are sent as the chain.
    """
    chain_pem = cert_path.read_bytes()
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_path.read_bytes())
    certs = [
        crypto.load_certificate(crypto.FILETYPE_PEM, c.encode("ascii"))
        for c in _split_pem(chain_pem.decode("ascii"))
    ]
    if not certs:
        raise ValueError(f"no certificate in {cert_path}")
    return ssl.CertificateOptions(
        privateKey=key,
        certificate=certs[0],
        extraCertChain=certs[1:],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def _split_pem(text: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    out = []
    for block in text.split(end)[:-1]:
        start = block.find("-----BEGIN CERTIFICATE-----")
        if start >= 0:
            out.append(block[start:] + end + "\n")
    return out
