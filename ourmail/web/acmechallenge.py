"""ACME HTTP-01 answers on the ``http`` listener (RFC 8555 §8.3), beside the HTTPS redirect.

``GET /.well-known/acme-challenge/<token>`` answers the key authorisation the certificate
renewal (``ourmail/secure/acmerenewal.py``) put in ``challenges`` for that token, as
``application/octet-stream``; an unknown token is a 404.  Every answer on that path carries
``X-ACME-Responder: ourmail``, by which ``ourmail cert renew`` knows the program holding the
``http`` address is a running ourmail.  The CA's validation server follows
no redirect to HTTPS it cannot yet trust, so this path is never redirected; every other path
still is (``ourmail/web/redirect.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from twisted.web import resource, server
from twisted.web.server import Request

from ourmail.config import Limits
from ourmail.web.redirect import RedirectToHTTPS
from ourmail.web.site import CountedSite

#: RFC 8555 §8.3: the token is base64url without padding (at least 128 bits of entropy).
_TOKEN = re.compile(rb"^[A-Za-z0-9_-]{1,256}$")
PREFIX = b"/.well-known/acme-challenge/"
#: The header (and its value) on every answer under :data:`PREFIX`.
RESPONDER = (b"X-ACME-Responder", b"ourmail")


class ChallengeOrRedirect(resource.Resource):
    """Answers HTTP-01 challenges from ``challenges`` (token -> key authorisation) and
    hands every other request to ``redirect``."""

    isLeaf = True

    def __init__(self, challenges: Mapping[str, str], redirect: resource.Resource) -> None:
        super().__init__()
        self.challenges = challenges
        self.redirect = redirect

    def render(self, request: Request) -> bytes:
        path = request.path
        if not path.startswith(PREFIX):
            return self.redirect.render(request)  # type: ignore[no-any-return]
        request.setHeader(*RESPONDER)
        token = path[len(PREFIX) :]
        answer = self.challenges.get(token.decode("ascii")) if _TOKEN.match(token) else None
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"GET, HEAD")
            return b""
        if answer is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"No such challenge.\n"
        request.setHeader(b"Content-Type", b"application/octet-stream")
        return answer.encode("ascii")


def http_site(
    hostname: str, https_port: Callable[[], int], limits: Limits, challenges: Mapping[str, str]
) -> server.Site:
    """The ``http`` listener's factory when ACME is on: challenges, else the redirect."""
    redirect = RedirectToHTTPS(hostname, https_port)
    return CountedSite(ChallengeOrRedirect(challenges, redirect), limits)
