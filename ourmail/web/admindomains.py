"""The admin console's domains, DNS and certificates pages (issue 17 points 2 and 4,
docs/admin-console.md#domains-dns-and-certificates).

Routes:

* ``GET /admin/domains``: the domains the admin manages, where each comes from, its users,
  aliases and DKIM keys; ``POST /admin/domains/add`` (full admins: ``ourmail domain add``),
  ``POST /admin/domains/dkim`` (make a DKIM key for a domain that has none);
* ``GET /admin/dns?domain=``: the records to publish, as a table and a zone snippet;
  ``POST /admin/dns/check``: the same page with each record checked against DNS now
  (bounded in time, at most :data:`CHECKS_PER_MINUTE` per admin);
* ``GET /admin/certificates`` (full admins): the certificate each TLS listener serves and
  the ACME state (``ourmail cert status``).

Rights as everywhere in the console (:meth:`AdminPages.admin`): a domain admin sees and
changes only their domains; anything beyond is 403 and audit-logged, nothing changed.
"""

from __future__ import annotations

import collections
import re
import unicodedata
from typing import Any
from urllib.parse import urlencode

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from ourmail.config import ConfigError, normalise_domain
from ourmail.interfaces import (
    AccountRefused,
    DnsCheckRow,
    DnsRecords,
    DomainInfo,
    ICertificateStatus,
    IDomainAdmin,
)
from ourmail.web.adminpages import AdminAccess, AdminPages, NotAdmin

#: Longest ``domain`` read (RFC 1035 §2.3.4: 253 octets as text, with room for a final dot
#: and for U-labels that IDNA shortens).
MAX_DOMAIN = 253
#: A domain name in A-labels (RFC 1035 §2.3.1, RFC 5890 §2.3.2.1): letters, digits and
#: hyphens, labels of 1 to 63, at least two of them.
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")
#: DNS checks one admin may start in a minute: enough to fix and check again, too few to use
#: the page to flood a resolver.
CHECKS_PER_MINUTE = 6
#: What ``?done=`` may confirm here.
DONE = ("domain-added", "dkim-made")


class BadDomain(ValueError):
    """A ``domain`` value that is no domain name: 400."""


class CheckLimiter:
    """At most ``most`` checks per admin in any ``window`` seconds, one at a time."""

    def __init__(self, most: int = CHECKS_PER_MINUTE, window: float = 60.0) -> None:
        self.most, self.window = most, window
        self.started: dict[str, collections.deque[float]] = {}
        self.running: set[str] = set()

    def start(self, who: str, now: float) -> bool:
        """Whether ``who`` may start a check at ``now`` (counted when so)."""
        times = self.started.setdefault(who, collections.deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        if who in self.running or len(times) >= self.most:
            return False
        times.append(now)
        self.running.add(who)
        return True

    def done(self, who: str) -> None:
        """``who``'s check has ended."""
        self.running.discard(who)
        if not self.started.get(who):
            self.started.pop(who, None)


def domain_value(raw: str | None) -> str:
    """A form's ``domain``, normalised (lower case, A-labels); :class:`BadDomain` when it is
    missing, too long, has control or format characters (CR, LF, bidi overrides), path or
    markup characters, or is otherwise no domain name."""
    if not raw or len(raw) > MAX_DOMAIN:
        raise BadDomain(raw or "")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in raw):
        raise BadDomain(raw)
    try:
        domain = normalise_domain(raw)
    except ConfigError:
        raise BadDomain(raw) from None
    if not _DOMAIN.fullmatch(domain):
        raise BadDomain(raw)
    return domain


class AdminDomainsPages(AdminPages):
    """The domains, DNS and certificates pages (see the module docstring)."""

    app = AdminPages.app

    @property
    def domain_admin(self) -> IDomainAdmin:
        domains = self.services.domains
        if domains is None:
            raise NotAdmin("domains.view")  # a server without it: nobody may use the pages
        return domains

    @property
    def dns_limiter(self) -> CheckLimiter:
        limiter: CheckLimiter | None = getattr(self, "_dns_limiter", None)
        if limiter is None:
            limiter = self._dns_limiter = CheckLimiter()
        return limiter

    def domain_param(self, request: IRequest, access: AdminAccess, action: str) -> str:
        """The request's ``domain``, normalised, when ``access`` manages it: else 400
        (:class:`BadDomain`) or 403 (:class:`NotAdmin`, logged)."""
        domain = domain_value(self.form(request, "domain", MAX_DOMAIN))
        if not access.manages(domain):
            raise NotAdmin(action, domain)
        return domain

    @app.handle_errors(BadDomain)
    def bad_domain(self, request: IRequest, failure: Any) -> bytes:
        _ = self.gettext(request)
        return self.error(request, 400, _("This is not a valid domain name."))

    def refusal(self, request: IRequest, refused: AccountRefused) -> str:
        """An :class:`AccountRefused` of a domain change, in the request's language."""
        _ = self.gettext(request)
        subject = {"domain": refused.subject}
        texts = {
            "exists": lambda: _("%(domain)s is already served here.") % subject,
            "configured": lambda: (
                _("%(domain)s is already served (from the configuration).") % subject
            ),
            "bad-domain": lambda: _("This is not a valid domain name."),
            "not-served": lambda: _("%(domain)s is not a domain served here.") % subject,
            "has-key": lambda: _("%(domain)s already has a DKIM key.") % subject,
            "dkim": lambda: _("The DKIM key could not be made: see the server's log."),
        }
        text = texts.get(refused.code)
        return text() if text else self.refusal_text(request, refused)

    # -- domains ---------------------------------------------------------------------------

    async def visible_domains(self, access: AdminAccess) -> list[DomainInfo]:
        return [d for d in await self.domain_admin.domains() if access.manages(d.name)]

    @app.route("/admin/domains", methods=["GET"])
    async def admin_domains(self, request: IRequest, code: int = 200, **context: Any) -> bytes:
        access = self.admin(request, "domains.view")
        rows = []
        for info in await self.visible_domains(access):
            users, aliases = await self.accounts.count([info.name])
            rows.append((info, users, aliases, any(k.signing and k.readable for k in info.keys)))
        done = self.form(request, "done", 20)
        return self.render_admin(
            request,
            access,
            "admin_domains.html",
            code,
            rows=rows,
            domain_done=done if done in DONE else None,
            done_domain=self.form(request, "which", MAX_DOMAIN) or "",
            **context,
        )

    @app.route("/admin/domains/add", methods=["POST"])
    async def admin_add_domain(self, request: IRequest) -> bytes:
        access = self.admin(request, "domain.add")
        if not access.full:
            raise NotAdmin("domain.add", (self.form(request, "domain", MAX_DOMAIN) or "")[:400])
        self.checked(request)
        typed = self.form(request, "domain", MAX_DOMAIN) or ""
        try:
            domain = domain_value(typed)
            added = await self.domain_admin.add_domain(self.actor(request, access), domain)
        except BadDomain:
            _ = self.gettext(request)
            error = _("This is not a valid domain name.")
            return await self.admin_domains(request, 400, add_error=error, typed=typed)
        except AccountRefused as e:
            error = self.refusal(request, e)
            return await self.admin_domains(request, 400, add_error=error, typed=typed)
        return self.redirect(request, b"/admin/domains?" + _query(done="domain-added", which=added))

    @app.route("/admin/domains/dkim", methods=["POST"])
    async def admin_make_dkim(self, request: IRequest) -> bytes:
        access = self.admin(request, "dkim.gen")
        domain = self.domain_param(request, access, "dkim.gen")
        self.checked(request)
        try:
            await self.domain_admin.make_dkim_key(self.actor(request, access), domain)
        except AccountRefused as e:
            return await self.admin_domains(request, 400, error=self.refusal(request, e))
        return self.redirect(request, b"/admin/domains?" + _query(done="dkim-made", which=domain))

    # -- DNS -------------------------------------------------------------------------------

    async def served(self, request: IRequest, access: AdminAccess, action: str) -> str:
        """The request's ``domain`` when served here and managed by ``access``."""
        domain = self.domain_param(request, access, action)
        if domain not in [d.name for d in await self.domain_admin.domains()]:
            raise AccountRefused("not-served", "not served", domain)
        return domain

    @app.route("/admin/dns", methods=["GET"])
    async def admin_dns(self, request: IRequest) -> bytes:
        access = self.admin(request, "dns.view")
        try:
            domain = await self.served(request, access, "dns.view")
        except AccountRefused as e:
            return self.error(request, 404, self.refusal(request, e))
        return await self.dns_page(request, access, domain)

    async def dns_page(
        self,
        request: IRequest,
        access: AdminAccess,
        domain: str,
        code: int = 200,
        checked: list[DnsCheckRow] | None = None,
        records: Deferred[DnsRecords] | None = None,
        **context: Any,
    ) -> bytes:
        shown = await (records or self.domain_admin.records(domain))
        results = None
        if checked is not None:
            counts = collections.Counter(r.status for r in checked)
            results = {"rows": checked, "counts": counts}
        return self.render_admin(
            request,
            access,
            "admin_dns.html",
            code,
            domain=domain,
            records=shown,
            results=results,
            kinds=self.kind_texts(request),
            **context,
        )

    @app.route("/admin/dns/check", methods=["POST"])
    async def admin_dns_check(self, request: IRequest) -> bytes:
        access = self.admin(request, "dns.check")
        try:
            domain = await self.served(request, access, "dns.check")
        except AccountRefused as e:
            return self.error(request, 404, self.refusal(request, e))
        self.checked(request)
        who = access.session.address
        if not self.dns_limiter.start(who, self.services.reactor.seconds()):
            _ = self.gettext(request)
            request.setHeader(b"Retry-After", b"60")  # RFC 9110 §10.2.3
            error = _("Too many DNS checks: wait a minute, then check again.")
            kept = self.domain_admin.records(domain, ask_dns=False)  # a refusal asks no DNS
            return await self.dns_page(
                request, access, domain, 429, records=kept, check_error=error
            )
        records = self.domain_admin.records(domain)  # asked meanwhile: the page waits once
        try:
            checked = await self.domain_admin.check(domain)
        finally:
            self.dns_limiter.done(who)
        return await self.dns_page(request, access, domain, checked=checked, records=records)

    def kind_texts(self, request: IRequest) -> dict[str, str]:
        """What each kind of record is for, in the request's language."""
        _ = self.gettext(request)
        return {
            "mx": _("Where mail for the domain is delivered"),
            "address": _("The address of the mail server's host name"),
            "ptr": _("Reverse DNS of the server's address (set by its provider)"),
            "spf": _("SPF: which hosts may send the domain's mail"),
            "dkim": _("DKIM: the key receivers check signatures with"),
            "dmarc": _("DMARC: the policy for mail failing SPF and DKIM, and where reports go"),
            "mta-sts": _("MTA-STS: senders must use TLS to the MX"),
            "tls-rpt": _("TLS-RPT: where senders report TLS failures"),
            "srv": _("How mail clients find the server (RFC 6186)"),
            "alias": _("A host name clients and senders look up (autoconfig, MTA-STS)"),
        }

    # -- certificates --------------------------------------------------------------------------

    @app.route("/admin/certificates", methods=["GET"])
    async def admin_certificates(self, request: IRequest) -> bytes:
        access = self.admin(request, "certificates.view")
        if not access.full:
            raise NotAdmin("certificates.view")
        status: ICertificateStatus | None = self.services.certificates
        if status is None:
            raise NotAdmin("certificates.view")
        return self.render_admin(
            request,
            access,
            "admin_certificates.html",
            listeners=await status.listeners(),
            acme=await status.acme(),
        )


def _query(**fields: str) -> bytes:
    return urlencode(fields).encode("ascii")
