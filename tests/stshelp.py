"""MTA-STS test peers: a test CA, certificates it signs, and an HTTPS policy server on loopback
(``twisted.web`` with real TLS) for ``mta-sts.remote.test``."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from storehelp import on_reactor
from twisted.internet import reactor
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ourmail.net.tls import server_context

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.remote.test\r\nmax_age: 86400\r\n"


class TestCA:
    __test__ = False

    """A CA whose certificate the queue trusts through ``mta_sts_ca_file``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ourmail test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *more: str) -> tuple[Path, Path]:
        """A certificate and key for ``name`` (and ``more``), as PEM files."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in (name, *more)]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        cert_path = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


class PolicyServer(Resource):
    """Serves ``/.well-known/mta-sts.txt``; the body, status and media type can change."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.body = POLICY
        self.status = 200
        self.media_type = b"text/plain"
        self.location = b""
        #: Send the body in pieces without a Content-Length (chunked), as a stream would.
        self.chunked = False
        self.hits = 0
        self.port: IListeningPort | None = None

    def render_GET(self, request: Request) -> bytes | int:
        if request.path != b"/.well-known/mta-sts.txt":
            request.setResponseCode(404)
            return b"not found"
        self.hits += 1
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", self.media_type)
        if self.location:
            request.setHeader(b"location", self.location)
        if not self.chunked:
            return self.body
        for start in range(0, len(self.body), 8192):
            request.write(self.body[start : start + 8192])
        request.finish()
        return NOT_DONE_YET

    def start(self, cert: Path, key: Path, interface: str = "127.0.0.2") -> int:
        """Listen with TLS on a free port of ``interface``; the port."""
        options = server_context(cert, key)

        def listen() -> IListeningPort:
            return reactor.listenSSL(0, Site(self), options, interface=interface)  # type: ignore[attr-defined,no-any-return]

        self.port = on_reactor(listen)
        return self.port.getHost().port  # type: ignore[attr-defined,no-any-return]

    def stop(self) -> None:
        if self.port is not None:
            on_reactor(self.port.stopListening)
