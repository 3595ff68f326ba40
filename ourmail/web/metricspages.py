"""``GET /metrics`` (the Prometheus text format) and ``GET /healthz`` (docs/metrics.md).

Both answer only clients in ``[metrics] networks``, judged by the TCP peer's address (never
by ``X-Forwarded-For`` or another header a client can write); anyone else gets 403, logged
with the client's address and the path.  Neither needs a session nor a CSRF token: they only
read.  ``/healthz`` is also served by the ``http`` listener (:class:`HealthOrRedirect`) for
load balancers that probe over plain HTTP; ``/metrics`` is not, as it tells more.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from twisted.logger import Logger
from twisted.web import resource
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from ourmail.net.health import Health
from ourmail.net.metrics import CONTENT_TYPE
from ourmail.web.pages import Pages

log = Logger()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """``[metrics] networks`` parsed (config.py has checked them)."""
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def allowed(request: IRequest, where: Sequence[Network]) -> bool:
    """Whether the TCP peer of ``request`` is in ``where``; False for a client that is not
    an IP address.  An IPv4-mapped IPv6 peer (``::ffff:a.b.c.d``) counts as IPv4."""
    host = getattr(request.getClientAddress(), "host", None)
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in where)


def refused(request: IRequest) -> bytes:
    """403 for a client outside the networks, logged without the query or any header."""
    host = getattr(request.getClientAddress(), "host", "unknown")
    path = request.path.decode("ascii", "replace")[:100]
    log.warn("{path} refused to {client}: not in [metrics] networks", path=path, client=host)
    request.setResponseCode(403)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return b"forbidden\n"


def health_answer(request: IRequest, health: Health | None) -> bytes:
    """200 ``ok``, or 503 with the short reason (no health wired: 503 too)."""
    problem = "not configured" if health is None else health.problem()
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    if problem is None:
        return b"ok\n"
    request.setResponseCode(503)
    return problem.encode("utf-8", "replace") + b"\n"


class MetricsPages(Pages):
    """The monitoring routes of the ``web`` listener."""

    app = Pages.app

    @app.route("/metrics", methods=["GET"])
    def metrics_page(self, request: IRequest) -> bytes:
        services = self.services
        if not allowed(request, services.monitor_networks):
            return refused(request)
        if services.metrics is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"no metrics\n"
        body = services.metrics.exposition()
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    @app.route("/healthz", methods=["GET"])
    def health_page(self, request: IRequest) -> bytes:
        if not allowed(request, self.services.monitor_networks):
            return refused(request)
        return health_answer(request, self.services.health)


class HealthOrRedirect(resource.Resource):
    """The ``http`` listener's root: ``GET /healthz`` answered here (same networks), every
    other request by ``redirect`` (to HTTPS)."""

    isLeaf = True

    def __init__(
        self, redirect: resource.IResource, health: Health, where: Sequence[Network]
    ) -> None:
        super().__init__()
        self.redirect = redirect
        self.health = health
        self.where = tuple(where)

    def render(self, request: Request) -> bytes:
        if request.path != b"/healthz" or request.method not in (b"GET", b"HEAD"):
            return self.redirect.render(request)  # type: ignore[no-any-return]
        if not allowed(request, self.where):
            return refused(request)
        return health_answer(request, self.health)
