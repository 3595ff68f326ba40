"""``ourmail cert``: the TLS certificate the listeners serve (docs/certificates.md).

``status`` shows the certificate in use (names, issuer, expiry, and whether it is self-signed,
ACME's or one of your own).  ``renew`` orders a new ACME certificate at once: with the server
stopped it answers the HTTP-01 challenges itself on the ``http`` listener's address; while the
server runs (that address is taken) it leaves a request the server acts on at its next SIGHUP.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import http.client
import ipaddress
import secrets
import sys
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

from ourmail.config import ConfigError, Settings
from ourmail.preflight import parse_endpoint
from ourmail.secure.certfiles import ACMEFiles, read_info
from ourmail.secure.certstatus import acme_status, in_use


class CertError(ConfigError):
    """What ``ourmail cert`` could not do (reported as one line)."""


def cert_status(settings: Settings, args: argparse.Namespace) -> None:
    source, info, path = in_use(settings)
    print(f"source:   {source} ({path})")
    if info is None:
        print("no readable certificate there (the server makes a self-signed one at start)")
    else:
        now = datetime.datetime.now(datetime.UTC)
        print(f"names:    {', '.join(info.names) or info.subject}")
        print(f"issuer:   {info.issuer}")
        print(f"serial:   {info.serial:x}")
        print(f"expires:  {info.not_after:%Y-%m-%d %H:%M} UTC ({info.days_left(now):.0f} days)")
    acme = acme_status(settings)
    if not acme.enabled:
        print("acme:     off ([acme] enabled = false)")
        return
    print(f"acme:     on, {acme.directory}, renewed {acme.renew_days} days")
    print(f"          before expiry, for {', '.join(acme.required)}")
    if acme.optional:
        print(f"          and, when they validate, {', '.join(acme.optional)}")
    for name, when, again in acme.left_out:
        print(
            f"left out:  {name}: validation failed {_minutes(when)} UTC, "
            f"tried again after {_minutes(again)} UTC"
        )
    if acme.renewal_asked:
        print("          a renewal is asked for (the running server acts on SIGHUP)")


def _minutes(iso: str) -> str:
    """An ISO 8601 time as ``YYYY-MM-DD HH:MM``."""
    return f"{datetime.datetime.fromisoformat(iso):%Y-%m-%d %H:%M}"


def _renew_here(settings: Settings) -> bool:
    """With the server stopped: answer HTTP-01 on the ``http`` endpoint and order. False when
    that endpoint is taken (the server runs)."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from ourmail.admin.cli import _run_on_reactor
    from ourmail.secure.acmerenewal import CertificateRenewal
    from ourmail.web.acmechallenge import http_site

    endpoint = settings.listen.get("http")
    if not endpoint:
        raise CertError("ACME's HTTP-01 needs the http listener: set [listen] http")
    challenges: dict[str, str] = {}
    renewal = CertificateRenewal.from_settings(settings, None, reactor, challenges)
    site = http_site(settings.hostname, lambda: 443, settings.limits, challenges)

    def order() -> Deferred[bool]:
        listener = serverFromString(reactor, endpoint)  # type: ignore[no-untyped-call]
        listening: Deferred[IListeningPort] = listener.listen(site)

        def listened(port: IListeningPort) -> Deferred[bool]:
            def stop(result: object) -> Deferred[object]:
                return maybeDeferred(port.stopListening).addCallback(lambda _: result)

            return renewal.renew(force=True).addBoth(stop)

        return listening.addCallback(listened)

    try:
        _run_on_reactor(order)
    except CannotListenError as e:
        if getattr(e.socketError, "errno", None) != errno.EADDRINUSE:
            raise CertError(
                f"cannot listen on the http listener's address ({endpoint}): {e.socketError}"
            ) from e
        if not _ourmail_answers(endpoint):
            raise CertError(
                f"the http listener's address ({endpoint}) is taken by another program, not "
                "by ourmail: stop it (or let it pass /.well-known/acme-challenge/ on to "
                "ourmail's http listener), then try again"
            ) from e
        return False
    return True


def _ourmail_answers(endpoint: str) -> bool:
    """Whether a running ourmail answers ACME challenges at ``endpoint``: a GET of an unknown
    token gets its 404 with :data:`~ourmail.web.acmechallenge.RESPONDER`."""
    from ourmail.web.acmechallenge import PREFIX, RESPONDER

    _, args, options = parse_endpoint(endpoint)
    port = options.get("port", args[0] if args else "")
    host = options.get("interface", "")
    if not port.isdigit():
        return False
    try:
        if not host or ipaddress.ip_address(host).is_unspecified:  # every address: loopback
            host = "::1" if ":" in host else "127.0.0.1"
    except ValueError:
        return False
    path = PREFIX.decode() + secrets.token_urlsafe(16)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        header = answer.getheader(RESPONDER[0].decode(), "")
        return answer.status == 404 and header == RESPONDER[1].decode()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def cert_renew(settings: Settings, args: argparse.Namespace) -> None:
    if not settings.acme.enabled:
        raise CertError("ACME is off: set [acme] enabled = true first (docs/certificates.md)")
    from ourmail.secure.acmerenewal import port_warning  # ACME's client: only for renewals

    files = ACMEFiles.of(settings.data_dir)
    warning = port_warning(settings)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        done = _renew_here(settings)
    except ConfigError:
        raise
    except Exception as e:  # requests', acme's and the CA's errors alike: one line
        raise CertError(f"the ACME order failed, the old certificate stays: {e}") from e
    if done:
        info = read_info(files.certificate)
        assert info is not None
        print(f"new certificate from {info.issuer} in {files.certificate}, valid until")
        print(f"{info.not_after:%Y-%m-%d %H:%M} UTC; the server serves it from its next start")
        return
    files.request_renewal()
    print("the http listener's address is taken, so the server is running: it renews at its")
    print("next SIGHUP (`systemctl reload ourmail` or `kill -HUP <pid>`), then daily by itself")


def run(settings: Settings, db: object, args: argparse.Namespace) -> None:
    """The chosen ``cert`` command."""
    args.cert_func(settings, args)


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``cert`` topic and its commands (they set ``cert_func``)."""
    cert = topics.add_parser("cert", parents=[common], help="the TLS certificate")
    cmds = cert.add_subparsers(dest="command", required=True)
    p = cmds.add_parser("status", parents=[common], help="names, issuer, expiry, source")
    p.set_defaults(func=run, cert_func=cert_status)
    p = cmds.add_parser("renew", parents=[common], help="order a new ACME certificate now")
    p.set_defaults(func=run, cert_func=cert_renew)
