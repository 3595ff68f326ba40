"""What ``ourmail cert status`` and the admin console's certificates page show: the
certificate each TLS listener serves and the ACME state (docs/certificates.md).

Reads certificate files and the accounts file: blocking, so the server calls it in a thread.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.config import IMPLICIT_TLS, Settings
from ourmail.interfaces import AcmeStatus, ICertificateStatus, ListenerCertificate
from ourmail.preflight import parse_endpoint
from ourmail.secure.certfiles import (
    OPTIONAL_RETRY,
    ACMEFiles,
    CertInfo,
    read_info,
    read_left_out,
    renewal_reason,
    wanted_names,
)

#: Listeners that offer STARTTLS (RFC 3207, RFC 3501 §6.2.1, RFC 2595 §4) on the shared
#: certificate; those of ``IMPLICIT_TLS`` speak TLS from the first byte.
STARTTLS = ("smtp", "submission", "imap", "pop3")


def in_use(settings: Settings) -> tuple[str, CertInfo | None, str]:
    """The certificate the server serves at start: (source, its details, its file)."""
    acme = ACMEFiles.of(settings.data_dir)
    if settings.acme.enabled:
        info = read_info(acme.certificate)
        if info is not None:
            return "ACME", info, str(acme.certificate)
    info = read_info(settings.tls_certificate)
    source = "self-signed" if info is None or info.self_signed else "[tls] files"
    return source, info, str(settings.tls_certificate)


def source_of(settings: Settings, path: Path, info: CertInfo | None) -> str:
    """Where the certificate at ``path`` comes from: ``ACME``, ``self-signed`` or ``[tls]
    files``."""
    if path == ACMEFiles.of(settings.data_dir).certificate:
        return "ACME"
    return "self-signed" if info is None or info.self_signed else "[tls] files"


def _listener(
    name: str, source: str, path: Path, info: CertInfo | None, now: datetime.datetime
) -> ListenerCertificate:
    if info is None:
        return ListenerCertificate(name, source, str(path))
    return ListenerCertificate(
        listener=name,
        source=source,
        path=str(path),
        names=info.names or (info.subject,),
        issuer=info.issuer,
        not_after=info.not_after.isoformat(timespec="minutes"),
        days_left=int(info.days_left(now)),
        self_signed=info.self_signed,
    )


def listener_certificates(
    settings: Settings, shared: Callable[[], Path] | None = None
) -> list[ListenerCertificate]:
    """Each configured TLS listener and the certificate it serves: the shared one (its file
    now: ``shared()``, which follows ACME's swaps; else :func:`in_use`'s), or an ``ssl:``
    endpoint's own file (``certKey``, ``privateKey`` or ``server.pem``, as Twisted reads it)."""
    now = datetime.datetime.now(datetime.UTC)
    path = shared() if shared is not None else Path(in_use(settings)[2])
    info = read_info(path)
    found = []
    for name in sorted(settings.listen):
        endpoint = settings.listen.get(name)
        if not endpoint or (name not in STARTTLS and name not in IMPLICIT_TLS):
            continue
        try:
            kind, _, options = parse_endpoint(endpoint)
        except ValueError:
            continue
        if kind == "ssl":
            # Twisted's ssl: endpoint always serves its own files: certKey, else privateKey,
            # else server.pem (twisted.internet.endpoints._parseSSL), relative to the
            # server's working directory.
            own = Path(options.get("certKey") or options.get("privateKey") or "server.pem")
            own = own.absolute()
            found.append(_listener(name, "endpoint", own, read_info(own), now))
        else:
            found.append(_listener(name, source_of(settings, path, info), path, info, now))
    return found


def acme_status(settings: Settings, now: datetime.datetime | None = None) -> AcmeStatus:
    """``[acme]``: the names wanted, those left out, when the certificate is due."""
    if not settings.acme.enabled:
        return AcmeStatus(enabled=False)
    now = now or datetime.datetime.now(datetime.UTC)
    acme = settings.acme
    wanted = wanted_names(settings, AccountDB(settings.data_dir).domains())
    files = ACMEFiles.of(settings.data_dir)
    left_out = tuple(
        (
            name,
            when.isoformat(timespec="minutes"),
            (when + OPTIONAL_RETRY).isoformat(timespec="minutes"),
        )
        for name, when in sorted(read_left_out(files.left_out).items())
        if name in wanted.optional
    )
    info = read_info(files.certificate)
    due = info.not_after - datetime.timedelta(days=acme.renew_days) if info else None
    return AcmeStatus(
        enabled=True,
        directory=acme.directory,
        renew_days=acme.renew_days,
        required=wanted.required,
        optional=wanted.optional,
        left_out=left_out,
        renew_after=due.isoformat(timespec="minutes") if due else "",
        renew_reason=renewal_reason(info, wanted.required, acme.renew_days, now) or "",
        renewal_asked=files.renew_request.exists(),
    )


@implementer(ICertificateStatus)
class CertificateStatus:
    """:class:`ICertificateStatus` of a running server: ``shared()`` is the file the shared
    TLS context serves now (None: what the server serves at start)."""

    def __init__(self, settings: Settings, shared: Callable[[], Path] | None = None) -> None:
        self.settings = settings
        self.shared = shared

    def listeners(self) -> Deferred[list[ListenerCertificate]]:
        return deferToThread(listener_certificates, self.settings, self.shared)

    def acme(self) -> Deferred[AcmeStatus]:
        return deferToThread(acme_status, self.settings)
