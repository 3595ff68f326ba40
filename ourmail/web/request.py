"""The HTTP request of every web listener: security headers on every response, a bounded body.

The headers are set before any resource runs, so error pages, redirects and static files carry
them too; a page may add to them but never needs to remember them.
"""

from __future__ import annotations

from twisted.web import resource, server

#: Content Security Policy (CSP Level 3): scripts and styles only from this server, no inline
#: script, no plugins, no <base>, never framed, forms post only here.
CSP = (
    "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)

SECURITY_HEADERS: dict[bytes, bytes] = {
    b"Content-Security-Policy": CSP.encode(),
    # RFC 6797: HTTPS only for a year, the host's subdomains included.
    b"Strict-Transport-Security": b"max-age=31536000; includeSubDomains",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    # For browsers older than CSP's frame-ancestors.
    b"X-Frame-Options": b"DENY",
    b"Cross-Origin-Opener-Policy": b"same-origin",
    b"Cross-Origin-Resource-Policy": b"same-origin",
    # Pages show mail: no copy in a shared or disk cache (static files override this).
    b"Cache-Control": b"no-store",
}

#: Bytes of request body accepted (a login form needs a few hundred).
MAX_BODY = 64 * 1024
#: The compose form's routes take a longer text and, from a browser without JavaScript,
#: small attachments in the form itself (twisted parses such a form in memory).
FORM_BODY = 4 * 1024 * 1024
#: Paths whose bodies may be larger than MAX_BODY, for a logged-in session only: the compose
#: form's, and the raw upload of one attachment (None: up to the site's message size limit;
#: twisted spools bodies over 100 KB to a temporary file, so memory stays bounded).  A form
#: body (``multipart/form-data``, ``x-www-form-urlencoded``) is parsed by twisted in memory
#: on the reactor before any route runs, so it never gets more than FORM_BODY.
LARGER_BODIES: dict[bytes, int | None] = {
    b"/compose/send": FORM_BODY,
    b"/compose/draft": FORM_BODY,
    b"/compose/discard": FORM_BODY,
    b"/compose/upload": None,
}


class WebRequest(server.Request):
    """A request whose response starts with SECURITY_HEADERS and whose body is bounded:
    a body over ``max_body`` bytes is not kept, and the request is answered with 413."""

    max_body = MAX_BODY
    too_large = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        # The request line is known (the channel keeps it) but not yet parsed into self.path;
        # the cookies are parsed.
        target = bytes(getattr(self.channel, "_path", b"")).split(b"?", 1)[0]
        site = getattr(self.channel, "site", None)
        logged_in = getattr(site, "logged_in", None)
        if target in LARGER_BODIES and logged_in is not None and logged_in(self):
            larger = LARGER_BODIES[target]
            site_limit = getattr(site, "max_message_size", 0)
            self.max_body = larger if larger is not None else site_limit + MAX_BODY
            kind = (self.getHeader(b"content-type") or b"").split(b";", 1)[0].strip().lower()
            if kind in (b"multipart/form-data", b"application/x-www-form-urlencoded"):
                self.max_body = min(self.max_body, FORM_BODY)
        if length is not None and length > self.max_body:
            self.too_large = True
            length = 0  # keep nothing of it in memory or on disk
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self.max_body:
            self.too_large = True
        if not self.too_large:
            super().handleContentChunk(data)

    def process(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        if self.too_large:
            self.setResponseCode(413)
            self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            self.setHeader(b"Connection", b"close")
            self.write(b"Request body too large.\n")
            self.finish()
            return
        super().process()

    def render(self, resrc: resource.IResource) -> None:
        # Twisted's process() names its version in Server: say less.
        self.setHeader(b"Server", b"ourmail")
        super().render(resrc)
