"""The admin console (issue 17 points 4 and 5, docs/admin-console.md): the running services,
the domains, users and aliases, for admins only.

Routes:

* ``GET /admin``: the listeners and where they listen, the domains, counts of users and aliases;
* ``GET /admin/users?domain=&q=&page=``: users, searched by a part of the address, 50 a page;
  ``POST /admin/users/add``: create a user;
* ``GET /admin/user?address=``: one user's quota and usage, with forms to reset the password,
  set the quota and delete the account (``POST /admin/user/password``, ``/admin/user/quota``,
  ``/admin/user/delete``);
* ``GET /admin/aliases?domain=``: aliases; ``POST /admin/aliases/add``, ``/admin/aliases/delete``.

Every route starts with :meth:`AdminPages.admin`: who is asking and which domains they manage
(``[admin] admins``: all; ``[admin] domain_admins``: theirs).  A request beyond that (a plain
user, another domain, a domain admin touching an admin's account) is answered 403 and
recorded in the audit log; nothing is changed.  A POST then needs the session's CSRF token.
Changes go through :class:`~ourmail.interfaces.IAccountAdmin` (the code of the ``ourmail``
commands, in worker threads, audit-logged) and redirect (303) to a page that confirms them.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import attrs
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from ourmail.addresses import AddressError, normalise_address
from ourmail.config import QuotaLimit
from ourmail.interfaces import AccountRefused, Actor, ExpansionTooLarge, IAccountAdmin
from ourmail.web.directorylisting import directory_count, directory_listing
from ourmail.web.pages import Pages
from ourmail.web.sessions import WebSession

log = Logger()

#: Users shown per page.
PAGE_SIZE = 50
#: Longest address read from a form (RFC 5321 §4.5.3.1.3's path, less the brackets).
MAX_ADDRESS = 320
#: Longest password read from a form (as at login).
MAX_PASSWORD = 1024
#: Most targets of one alias, and the longest list read.
MAX_TARGETS = 50
MAX_TARGET_TEXT = MAX_TARGETS * (MAX_ADDRESS + 2)
#: What ``?done=`` may confirm.
DONE = (
    "added",
    "password",
    "quota",
    "deleted",
    "alias-added",
    "alias-deleted",
    "disable",
    "enable",
)


class NotAdmin(Exception):
    """An admin request beyond the asker's rights: 403, audit-logged."""

    def __init__(self, action: str, target: str = "") -> None:
        super().__init__(action)
        self.action = action
        self.target = target


@attrs.frozen
class AdminAccess:
    """A logged-in admin: the session and the domains they manage (None: every domain)."""

    session: WebSession
    domains: tuple[str, ...] | None

    @property
    def full(self) -> bool:
        """A full admin (``[admin] admins``)."""
        return self.domains is None

    def manages(self, domain: str) -> bool:
        """Whether this admin manages ``domain``."""
        return self.domains is None or domain in self.domains


def no_control(text: str) -> bool:
    """True when ``text`` has no control or format character (CR, LF, NUL, bidi overrides)."""
    return not any(unicodedata.category(c) in ("Cc", "Cf") for c in text)


class AdminPages(Pages):
    """The admin console's routes (see the module docstring)."""

    app = Pages.app

    # -- who may do what ---------------------------------------------------------------------

    def admin(self, request: IRequest, action: str, domain: str | None = None) -> AdminAccess:
        """The admin asking, when they may do ``action`` (in ``domain``, if given); otherwise
        :class:`NotAdmin` (403, logged) or :class:`~ourmail.web.pages.NotLoggedIn`."""
        session = self.user(request)
        settings = self.services.admin
        if session.address in settings.admins:
            return AdminAccess(session, None)
        managed = settings.domain_admins.get(session.address)
        if managed is None or self.services.accounts is None:
            raise NotAdmin(action, domain or "")
        access = AdminAccess(session, managed)
        if domain is not None and not access.manages(domain):
            raise NotAdmin(action, domain)
        return access

    def for_account(self, access: AdminAccess, address: str, action: str) -> None:
        """Refuse (:class:`NotAdmin`) a domain admin an account outside their domains, or the
        account of any admin (a domain admin must not take over an admin's login)."""
        if access.full:
            return
        settings = self.services.admin
        if (
            not access.manages(address.rpartition("@")[2])
            or address in settings.admins
            or address in settings.domain_admins
        ):
            raise NotAdmin(action, address)

    @Pages.app.handle_errors(NotAdmin)
    def not_admin(self, request: IRequest, failure: Failure) -> Any:
        refused: NotAdmin = failure.value  # type: ignore[assignment]
        session = self.peek_session(request)
        who = session.address if session is not None else ""
        client = getattr(request.getClientAddress(), "host", "unknown")
        log.warn(
            "admin console: {who} from {client} refused {action} {target!r}",
            who=who,
            client=client,
            action=refused.action,
            target=refused.target[:MAX_ADDRESS],
        )
        _ = self.gettext(request)
        page = self.error(request, 403, _("This page is for the server's admins only."))
        audit = self.services.audit
        if audit is None:
            return page
        actor = Actor(who, "web", client)
        d = deferToThread(audit.record, actor, refused.action, refused.target, "forbidden")
        d.addErrback(lambda f: log.failure("the audit log cannot be written", f))
        return d.addCallback(lambda _: page)

    # -- helpers ---------------------------------------------------------------------------

    @property
    def accounts(self) -> IAccountAdmin:
        accounts = self.services.accounts
        assert accounts is not None  # admin() refuses everyone without it
        return accounts

    def actor(self, request: IRequest, access: AdminAccess) -> Actor:
        client = getattr(request.getClientAddress(), "host", "unknown")
        return Actor(access.session.address, "web", client)

    def render_admin(
        self, request: IRequest, access: AdminAccess, name: str, code: int = 200, **context: Any
    ) -> bytes:
        """A page of the console (a template extending ``admin.html``), with the confirmation
        a redirect after a change asked for (``?done=`` one of ``DONE``, ``?who=``)."""
        done = self.form(request, "done", 20)
        return self.render(
            request,
            name,
            code,
            csrf=access.session.csrf,
            address=access.session.address,
            full_admin=access.full,
            vault_admin=self.services.vault is not None
            and self.services.vault.may_use(access.session.address),
            done=done if done in DONE else None,
            done_address=self.form(request, "who", MAX_ADDRESS) or "",
            **context,
        )

    async def managed_domains(self, access: AdminAccess) -> list[str]:
        """The domains served here that ``access`` may manage, in the served order."""
        return [d for d in await self.accounts.domains() if access.manages(d)]

    def refusal_text(self, request: IRequest, refused: AccountRefused) -> str:
        """What an :class:`AccountRefused` says, in the request's language."""
        _ = self.gettext(request)
        subject = refused.subject
        texts: dict[str, Callable[[], str]] = {
            "bad-address": lambda: _("This is not a valid address."),
            "not-served": lambda: (
                _("%(domain)s is not a domain served here.") % {"domain": subject}
            ),
            "exists": lambda: _("%(address)s already exists.") % {"address": subject},
            "short-password": lambda: (
                _("The password must have at least %(n)s characters.") % {"n": subject or "8"}
            ),
            "no-such-user": lambda: _("There is no user %(address)s.") % {"address": subject},
            "bad-quota": lambda: _("A limit must be a whole number, 0 or more."),
            "bad-target": lambda: _("A target is not a valid address."),
            "not-local-user": lambda: _("%(address)s is not a local user.") % {"address": subject},
            "no-targets": lambda: _("An alias needs at least one target."),
            "is-user": lambda: (
                _("%(address)s is a user; an alias needs an address of its own.")
                % {"address": subject}
            ),
            "no-such-alias": lambda: _("There is no alias %(address)s.") % {"address": subject},
            "audit": lambda: _(
                "The audit log cannot be written, so no change is made: see the server's log."
            ),
        }
        text = texts.get(refused.code)
        return text() if text else _("This change cannot be made.")

    async def address_field(self, request: IRequest, name: str = "address") -> str:
        """A form's address field, normalised; :class:`AccountRefused` when it is missing,
        too long, has control characters or is no address of a served domain."""
        raw = self.form(request, name, MAX_ADDRESS)
        if not raw or not no_control(raw):
            raise AccountRefused("bad-address", "not an address", "")
        return await self.accounts.address(raw)

    @staticmethod
    def page_number(request: IRequest) -> int:
        raw = Pages.form(request, "page", 10) or "1"
        return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 10**7 else 1

    def domain_field(self, request: IRequest) -> str:
        """The ``?domain=`` a listing is asked for (lower-cased; empty: every domain; one
        with control or format characters is none of ours and reads as ``?``)."""
        domain = (self.form(request, "domain", 260) or "").strip().lower()
        return domain if no_control(domain) else "?"

    # -- pages -----------------------------------------------------------------------------

    @app.route("/admin", methods=["GET"])
    async def admin_overview(self, request: IRequest) -> bytes:
        access = self.admin(request, "admin.view")
        domains = await self.managed_domains(access)
        users, aliases = await self.accounts.count(access.domains)
        listening = self.services.listening
        services = sorted((listening() if listening else {}).items()) if access.full else []
        return self.render_admin(
            request,
            access,
            "admin_overview.html",
            services=services,
            domains=domains,
            users=users,
            aliases=aliases,
            directory_users=await directory_count(self, domains),
        )

    @app.route("/admin/users", methods=["GET"])
    async def admin_users(self, request: IRequest, code: int = 200, **context: Any) -> bytes:
        domain = self.domain_field(request)
        access = self.admin(request, "users.view", domain or None)
        domains = [domain] if domain else access.domains
        text = (self.form(request, "q", MAX_ADDRESS) or "").strip()
        page = self.page_number(request)
        found = await self.accounts.users(domains, text, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        pages = max(1, math.ceil(found.total / PAGE_SIZE))
        disabling = self.services.disabling
        disabled = await disabling.disabled_among(found.addresses) if disabling else frozenset()

        def link(number: int) -> str:
            query = {k: v for k, v in (("domain", domain), ("q", text)) if v}
            return "/admin/users?" + urlencode({**query, "page": number})

        return self.render_admin(
            request,
            access,
            "admin_users.html",
            code,
            domain=domain,
            domains=await self.managed_domains(access),
            q=text,
            found=found,
            min_password=self.accounts.min_password(),
            page=page,
            pages=pages,
            previous=link(page - 1) if page > 1 else None,
            next=link(page + 1) if page < pages else None,
            disabled_users=disabled,
            directory=await directory_listing(
                self, request, domains or await self.managed_domains(access), domain, text
            ),
            **context,
        )

    @app.route("/admin/users/add", methods=["POST"])
    async def admin_add_user(self, request: IRequest) -> bytes:
        access = self.admin(request, "user.add")
        self.checked(request)
        typed = self.form(request, "address", MAX_ADDRESS) or ""
        try:
            address = await self.address_field(request)
            self.for_account(access, address, "user.add")
            password = self.form(request, "password", MAX_PASSWORD)
            if password is None:
                raise AccountRefused("short-password", "no password")
            added = await self.accounts.add_user(self.actor(request, access), address, password)
        except AccountRefused as e:
            return await self.admin_users(
                request, 400, add_error=self.refusal_text(request, e), typed=typed
            )
        return self.redirect(request, b"/admin/users?" + _query(done="added", who=added))

    @app.route("/admin/user", methods=["GET"])
    async def admin_user(self, request: IRequest, code: int = 200, **context: Any) -> bytes:
        access = self.admin(request, "user.view")
        try:
            address = await self.address_field(request)
            self.for_account(access, address, "user.view")
            quota = await self.accounts.quota(address)
            disabling = self.services.disabling
            disabled = await disabling.state(address) if disabling is not None else None
        except AccountRefused as e:
            if e.code == "no-such-user" and self.services.directory_users is not None:
                # Perhaps a directory user: their read-only page (ourmail/web/admindirectory.py).
                return self.redirect(request, b"/admin/directory/user?" + _query(address=address))
            return self.error(request, 404, self.refusal_text(request, e))
        return self.render_admin(
            request,
            access,
            "admin_user.html",
            code,
            user=address,
            quota=quota,
            limit_mib=_mib(quota.limit.bytes),
            used_mib=_mib(quota.used.bytes) or 0,
            own_account=address == access.session.address,
            min_password=self.accounts.min_password(),
            **(await self.user_panels(request, address)),
            disabled=disabled,
            can_disable=disabling is not None,
            **context,
        )

    async def user_panels(self, request: IRequest, address: str) -> dict[str, Any]:
        """More of the user page's context, from the console's other parts (forwarding):
        each overrides this, adding to what ``super()`` gives."""
        return {}

    async def _user_change(
        self, request: IRequest, action: str, change: Callable[[Actor, str], Any]
    ) -> bytes:
        """The shared steps of a change to one account: rights, CSRF, the change, then a
        redirect to the user's page (or the page again with the error)."""
        access = self.admin(request, action)
        self.checked(request)
        try:
            address = await self.address_field(request)
            self.for_account(access, address, action)
            await change(self.actor(request, access), address)
        except AccountRefused as e:
            error = self.refusal_text(request, e)
            if e.code in ("bad-address", "no-such-user", "not-served"):
                return self.error(request, 400, error)
            return await self.admin_user(request, 400, error=error)
        done = action.rpartition(".")[2]  # password, quota
        return self.redirect(request, b"/admin/user?" + _query(address=address, done=done))

    @app.route("/admin/user/password", methods=["POST"])
    async def admin_user_password(self, request: IRequest) -> bytes:
        password = self.form(request, "password", MAX_PASSWORD)

        def change(actor: Actor, address: str) -> Any:
            if password is None:
                raise AccountRefused("short-password", "no password")
            d = self.accounts.set_password(actor, address, password)
            return d.addCallback(lambda _: self.sessions.end_user(address))

        return await self._user_change(request, "user.password", change)

    @app.route("/admin/user/quota", methods=["POST"])
    async def admin_user_quota(self, request: IRequest) -> bytes:
        default = self.form(request, "default", 10) == "on"
        mib = _whole(self.form(request, "mib", 100))
        messages = _whole(self.form(request, "messages", 100))

        def change(actor: Actor, address: str) -> Any:
            if default:
                return self.accounts.set_quota(actor, address, None)
            if mib is None or messages is None:
                raise AccountRefused("bad-quota", "not a whole number", address)
            limit = QuotaLimit(bytes=mib * 1024 * 1024 or None, messages=messages or None)
            return self.accounts.set_quota(actor, address, limit)

        return await self._user_change(request, "user.quota", change)

    @app.route("/admin/user/delete", methods=["POST"])
    async def admin_user_delete(self, request: IRequest) -> bytes:
        access = self.admin(request, "user.del")
        self.checked(request)
        try:
            address = await self.address_field(request)
            self.for_account(access, address, "user.del")
            if address == access.session.address:
                _ = self.gettext(request)
                return await self.admin_user(
                    request, 400, error=_("You cannot delete your own account here.")
                )
            await self.accounts.delete_user(self.actor(request, access), address)
            self.sessions.end_user(address)  # the account is gone: so are its web sessions
        except AccountRefused as e:
            return self.error(request, 400, self.refusal_text(request, e))
        return self.redirect(request, b"/admin/users?" + _query(done="deleted", who=address))

    # -- aliases -----------------------------------------------------------------------------

    @app.route("/admin/aliases", methods=["GET"])
    async def admin_aliases(self, request: IRequest, code: int = 200, **context: Any) -> bytes:
        domain = self.domain_field(request)
        access = self.admin(request, "aliases.view", domain or None)
        domains = [domain] if domain else access.domains
        return self.render_admin(
            request,
            access,
            "admin_aliases.html",
            code,
            domain=domain,
            domains=await self.managed_domains(access),
            aliases=await self.accounts.aliases(domains),
            **context,
        )

    async def alias_field(self, request: IRequest) -> str:
        """The alias's address (``@domain``: a catch-all), lower-cased; the domain's rights
        are checked by the caller."""
        raw = (self.form(request, "address", MAX_ADDRESS) or "").strip()
        if not raw or not no_control(raw):
            raise AccountRefused("bad-address", "not an address")
        if raw.startswith("@"):
            return raw.lower()
        return await self.accounts.address(raw)

    @app.route("/admin/aliases/add", methods=["POST"])
    async def admin_add_alias(self, request: IRequest) -> bytes:
        access = self.admin(request, "alias.add")
        self.checked(request)
        typed = self.form(request, "address", MAX_ADDRESS) or ""
        typed_targets = self.form(request, "targets", MAX_TARGET_TEXT) or ""
        try:
            alias = await self.alias_field(request)
            if not access.manages(alias.rpartition("@")[2]):
                raise NotAdmin("alias.add", alias)
            if not access.full:
                await self.alias_managed(access, alias)
            targets = [t for t in re.split(r"[\s,;]+", typed_targets) if t]
            if len(targets) > MAX_TARGETS or not all(no_control(t) for t in targets):
                raise AccountRefused("bad-target", "too many targets")
            if not access.full:
                await self.targets_managed(access, targets)
            added = await self.accounts.set_alias(self.actor(request, access), alias, targets)
        except AccountRefused as e:
            error = self.refusal_text(request, e)
            return await self.admin_aliases(
                request, 400, add_error=error, typed=typed, typed_targets=typed_targets
            )
        return self.redirect(request, b"/admin/aliases?" + _query(done="alias-added", who=added))

    async def alias_managed(self, access: AdminAccess, alias: str) -> None:
        """A domain admin may not make a catch-all (it would take the mail of every address
        the directory knows in the domain, LDAP users and admins included), nor an alias at an
        admin's address or at any address the directory delivers to (an LDAP user, group or
        list): either would take over someone's mail and their right to send as it."""
        if alias.startswith("@"):
            raise NotAdmin("alias.add", alias)
        self.for_account(access, alias, "alias.add")
        directory = self.services.directory
        if directory is not None:
            try:
                found = await directory.lookup(alias)
            except ExpansionTooLarge:  # a group or alias there already, a big one
                raise NotAdmin("alias.add", alias) from None
            domain = alias.rpartition("@")[2]
            ours = {a for a, _ in await self.accounts.aliases([domain])}
            page = await self.accounts.users([domain], alias, 0, 1000)
            local_user = alias in page.addresses
            if (found.kind == "user" and not local_user) or (
                found.kind == "alias" and alias not in ours and not found.catch_all
            ):
                raise NotAdmin("alias.add", alias)

    async def targets_managed(
        self, access: AdminAccess, targets: Sequence[str], action: str = "alias.add"
    ) -> None:
        """A domain admin's alias may deliver to users of their domains or forward to other
        hosts, never reach into another local domain (nor learn who exists there)."""
        domains = await self.accounts.domains()
        served, primary = set(domains), domains[0]
        for raw in targets:
            try:
                domain = normalise_address(raw, primary).rpartition("@")[2]
            except AddressError:
                raise AccountRefused("bad-target", "not an address") from None
            if domain in served and not access.manages(domain):
                raise NotAdmin(action, raw)

    @app.route("/admin/aliases/delete", methods=["POST"])
    async def admin_delete_alias(self, request: IRequest) -> bytes:
        access = self.admin(request, "alias.del")
        self.checked(request)
        try:
            alias = await self.alias_field(request)
            if not access.manages(alias.rpartition("@")[2]):
                raise NotAdmin("alias.del", alias)
            await self.accounts.delete_alias(self.actor(request, access), alias)
        except AccountRefused as e:
            return self.error(request, 400, self.refusal_text(request, e))
        return self.redirect(request, b"/admin/aliases?" + _query(done="alias-deleted", who=alias))


def _query(**fields: str) -> bytes:
    return urlencode(fields).encode("ascii")


def _whole(text: str | None) -> int | None:
    """A form's whole number of at most 12 digits (empty: 0), or None when it is none."""
    if text is None:
        return None
    text = text.strip() or "0"
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def _mib(size: int | None) -> int | None:
    return None if size is None else math.ceil(size / (1024 * 1024))
