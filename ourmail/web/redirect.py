"""The ``http`` listener: every request is answered with a redirect to the same path on HTTPS.

Nothing else is served over plain HTTP (no page, no cookie); the HTTPS answers then carry HSTS
(RFC 6797 §7.2: an HSTS host redirects plain-HTTP requests to HTTPS).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from twisted.web import resource, server
from twisted.web.server import Request

from ourmail.config import Limits
from ourmail.web.site import CountedSite

#: A host name or IPv4 address (the Host header, port removed); anything else is not trusted.
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")

#: RFC 3986 pchar and "/", with "%" kept as it is (the path arrives percent-encoded).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class RedirectToHTTPS(resource.Resource):
    """Answers 301 (GET, HEAD) or 308 (other methods, RFC 9110 §15.4.9) to
    ``https://<host>[:<port>]<path>``.  ``port`` gives the ``web`` listener's port (443 is
    left out); ``hostname`` stands in for a missing or malformed Host header."""

    isLeaf = True

    def __init__(self, hostname: str, port: Callable[[], int]) -> None:
        super().__init__()
        self.hostname = hostname
        self.port = port

    def location(self, request: Request) -> str:
        """The HTTPS address of ``request``."""
        host = (request.getHeader("host") or "").rsplit(":", 1)[0]
        if not _HOST.match(host):
            host = self.hostname
        target = urlsplit(request.uri.decode("latin-1"))
        # RFC 3986 §2.1: octets outside the path's characters are percent-encoded; a leading
        # "//" would name another host, so it becomes one "/".
        path = "/" + quote(target.path, safe=_PATH_SAFE).lstrip("/")
        query = f"?{quote(target.query, safe=_PATH_SAFE + '?')}" if target.query else ""
        number = self.port()
        port = "" if number == 443 else f":{number}"
        return f"https://{host}{port}{path}{query}"

    def render(self, request: Request) -> bytes:
        request.setResponseCode(301 if request.method in (b"GET", b"HEAD") else 308)
        request.setHeader(b"Location", self.location(request).encode("ascii", "replace"))
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"This server is reached over HTTPS.\n"


def redirect_site(hostname: str, https_port: Callable[[], int], limits: Limits) -> server.Site:
    """The ``http`` listener's factory."""
    return CountedSite(RedirectToHTTPS(hostname, https_port), limits)
