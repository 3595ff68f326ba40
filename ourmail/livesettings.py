"""Puts the settings :mod:`ourmail.configreload` reloads into the running listeners.

- ``[limits]``: each mail listener (SMTP, submission, LMTP, IMAP, POP3) hands the new limits
  to the sessions it accepts from now on, and counts connections against them; a session
  already open keeps the limits it started with.  The web listener takes the connection
  limits and ``max_message_size`` (uploads, webmail's submission) likewise.
- ``[log] recipients``: SMTP sessions accepted from now on.
- ``[metrics] networks``: who may read ``/metrics`` and ``/healthz`` (both listeners).

MX worker processes (``[smtp] mx_processes`` > 1) get the SIGHUP from their master and
apply the same settings to their MX listener (ourmail/mxworker.py).
"""

from __future__ import annotations

from typing import Any

import attrs

from ourmail.config import Settings
from ourmail.net.lineproto import SessionFactory
from ourmail.smtp.server import SMTPContext
from ourmail.smtp.submitter import Submitter
from ourmail.web.metricspages import HealthOrRedirect, networks
from ourmail.web.pages import WebServices
from ourmail.web.site import CountedSite


@attrs.define
class LiveSettings:
    """The running parts a reload reaches; :meth:`apply` is a ``ConfigReload`` callable."""

    sessions: list[SessionFactory] = attrs.Factory(list)
    sites: list[CountedSite] = attrs.Factory(list)
    health: list[HealthOrRedirect] = attrs.Factory(list)
    web: WebServices | None = None

    def watch(self, factory: Any) -> None:
        """Follow a listener's factory (before any TLS wrapper), whatever kind it is."""
        if isinstance(factory, SessionFactory):
            self.sessions.append(factory)
        if isinstance(factory, CountedSite):
            self.sites.append(factory)
        if isinstance(getattr(factory, "resource", None), HealthOrRedirect):
            self.health.append(factory.resource)

    def apply(self, settings: Settings) -> None:
        """Hand the live settings to the listeners (in the reactor thread)."""
        limits = settings.limits
        for factory in self.sessions:
            new: dict[str, Any] = {"limits": limits}
            if isinstance(factory.ctx, SMTPContext):
                new["log_recipients"] = settings.log.recipients
            factory.ctx = attrs.evolve(factory.ctx, **new)
            factory.counts.limits = limits
        for site in self.sites:
            site.counts.limits = limits
            site.max_message_size = limits.max_message_size
        allowed = networks(settings.metrics.networks)
        for health in self.health:
            health.where = tuple(allowed)
        if self.web is not None:
            self.web.max_message_size = limits.max_message_size
            self.web.monitor_networks = tuple(allowed)
            if isinstance(self.web.submission, Submitter):
                self.web.submission.limits = limits
