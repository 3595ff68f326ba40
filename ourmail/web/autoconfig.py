"""Routes that let mail clients find their settings (issue 17 point 6; formats in
``ourmail/web/clientconfig.py``, docs/autoconfig.md):

* ``GET /.well-known/autoconfig/mail/config-v1.1.xml`` and, on the ``autoconfig.<domain>``
  host, ``GET /mail/config-v1.1.xml`` (Thunderbird, with ``?emailaddress=``);
* ``POST /autodiscover/autodiscover.xml`` (Outlook, any case of the path);
* ``GET /mobileconfig?email=`` (an Apple profile, signed with the server's certificate);
* ``GET /.well-known/mta-sts.txt`` on the ``mta-sts.<domain>`` host (RFC 8461 §3.3).

They need no login (clients ask before they have a password) and say nothing secret: only
whether a domain is served here, which its MX records say anyway.  A domain that is not local
gets 404.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ourmail.web import clientconfig
from ourmail.web.pages import Pages


class AutoconfigPages(Pages):
    """The client set-up routes (see the module's docstring)."""

    app = Pages.app

    def _domain(self, request: IRequest, address: str | None, prefix: str = "") -> str | None:
        """The local domain asked about: the address's, else the host name's after
        ``prefix`` (``autoconfig.``), else None (not served here)."""
        if address and "@" in address:
            domain = address.rpartition("@")[2]
        else:
            host = (request.getHeader(b"host") or b"").decode("ascii", "replace")
            host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not host.lower().startswith(prefix):
                return None
            domain = host[len(prefix) :]
        domain = domain.strip().rstrip(".").lower()
        directory = self.services.directory
        if not domain or len(domain) > 253 or directory is None:
            return None
        return domain if directory.is_local_domain(domain) else None

    def _respond(self, request: IRequest, kind: bytes, body: bytes) -> bytes:
        request.setHeader(b"Content-Type", kind)
        return body

    def _gone(self, request: IRequest) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"No mail service for this domain here.\n"

    @app.route("/.well-known/autoconfig/mail/config-v1.1.xml", methods=["GET"])
    def thunderbird_well_known(self, request: IRequest) -> bytes:
        # Asked of https://<domain>/.well-known/...: the address's domain, else the host's.
        return self._thunderbird(request, "")

    @app.route("/mail/config-v1.1.xml", methods=["GET"])
    def thunderbird_autoconfig_host(self, request: IRequest) -> bytes:
        # Asked of https://autoconfig.<domain>/mail/...
        return self._thunderbird(request, "autoconfig.")

    def _thunderbird(self, request: IRequest, prefix: str) -> bytes:
        setup = self.services.clients() if self.services.clients else None
        domain = self._domain(request, self.form(request, "emailaddress", 320), prefix)
        if setup is None or domain is None:
            return self._gone(request)
        body = clientconfig.thunderbird(domain, setup)
        return self._respond(request, b"application/xml; charset=utf-8", body)

    @app.route("/autodiscover/autodiscover.xml", methods=["POST"])
    @app.route("/Autodiscover/Autodiscover.xml", methods=["POST"])
    @app.route("/AutoDiscover/AutoDiscover.xml", methods=["POST"])
    def outlook(self, request: IRequest) -> bytes:
        setup = self.services.clients() if self.services.clients else None
        content = request.content
        body = content.read(clientconfig.MAX_REQUEST + 1) if content is not None else b""
        address = clientconfig.autodiscover_address(body)
        if address is None:
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Not an autodiscover request.\n"
        if setup is None or self._domain(request, address) is None:
            return self._gone(request)
        body = clientconfig.autodiscover(address, setup)
        return self._respond(request, b"application/xml; charset=utf-8", body)

    @app.route("/mobileconfig", methods=["GET"])
    def apple(self, request: IRequest) -> Deferred[bytes] | bytes:
        setup = self.services.clients() if self.services.clients else None
        address = (self.form(request, "email", 320) or "").strip().lower()
        if setup is None or not address or self._domain(request, address) is None:
            return self._gone(request)
        try:
            profile = clientconfig.apple_profile(address, setup)
        except ValueError:
            return self._gone(request)
        request.setHeader(b"Content-Type", b"application/x-apple-aspen-config")
        name = address.rpartition("@")[2].encode("ascii", "replace")
        request.setHeader(b"Content-Disposition", b'attachment; filename="%s.mobileconfig"' % name)
        files = self.services.certificate
        if files is None:
            return profile
        certificate, key = files

        def sign() -> bytes:
            return clientconfig.sign_profile(
                profile, Path(certificate).read_bytes(), Path(key).read_bytes()
            )

        return deferToThread(sign)

    @app.route("/.well-known/mta-sts.txt", methods=["GET"])
    def mta_sts(self, request: IRequest) -> bytes:
        setup = self.services.clients() if self.services.clients else None
        if setup is None or self._domain(request, None, "mta-sts.") is None:
            return self._gone(request)
        # RFC 8461 §3.3: text/plain; the policy may be cached by the sender for max_age.
        return self._respond(
            request, b"text/plain; charset=utf-8", clientconfig.mta_sts_policy(setup)
        )
