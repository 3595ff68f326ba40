"""What every page of the webmail shares: the one klein router, templates in the user's
language, the session and CSRF checks, form fields, cookies and redirects.

Each part of the webmail (the message list, the message view, compose, settings, live
updates) is a class of its own module that derives from :class:`Pages` and adds its routes
to :attr:`Pages.app`; :class:`ourmail.web.app.WebApp` derives from all of them.  A route of a
logged-in page starts with :meth:`Pages.user` (its session, or a redirect to the login) and a
POST with :meth:`Pages.checked` (the session and its CSRF token).
"""

from __future__ import annotations

import gettext
import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import attrs
from jinja2 import Environment, PackageLoader, select_autoescape
from klein import Klein
from twisted.internet import reactor as default_reactor
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from ourmail.auth.login import Authenticator
from ourmail.auth.login import Session as Login
from ourmail.config import AdminSettings, Limits
from ourmail.interfaces import (
    IAccountAdmin,
    IAccountDisabling,
    IAuditLog,
    ICertificateStatus,
    IDirectory,
    IDirectoryUsers,
    IDomainAdmin,
    IFilterLogReader,
    IPasswordChanger,
    IPreferences,
    IQueueAdmin,
    IRetention,
    IRoutingAdmin,
    ISetupWizard,
    IShardReport,
    ISharedFolders,
    ISubmission,
    IVaultDesk,
    StoreError,
)
from ourmail.lists.service import ListService
from ourmail.net.health import Health
from ourmail.net.metrics import Metrics
from ourmail.web import i18n
from ourmail.web.clientconfig import ClientSetup
from ourmail.web.sessions import SessionStore, WebSession, new_token, same_token
from ourmail.web.sharedfolders import shared_tree

#: The session cookie.  ``__Host-``: only ever set over HTTPS, for this host and path ``/``
#: (RFC 6265bis §4.1.3.2), so a sibling domain cannot plant one.
SESSION_COOKIE = b"__Host-ourmail_session"
#: The CSRF token of a browser that is not logged in yet (the login and language forms).
LOGIN_COOKIE = b"__Host-ourmail_login"


@attrs.define
class WebServices:
    """What the webmail reaches mail and people through, besides the login: all interfaces
    (``ourmail/interfaces.py``), wired by ``service.py``.  None: that part is not there (a
    test without it, a server without a directory)."""

    #: Addresses, aliases and who may send as whom.
    directory: IDirectory | None = None
    #: Each user's settings (signature, out-of-office, senders whose images they see).
    preferences: IPreferences | None = None
    #: Retention and legal holds: asked before a message is erased for good (None: none).
    retention: IRetention | None = None
    #: The reactor (timers, threads).
    reactor: Any = default_reactor
    #: How mail clients reach this server (autoconfig); a callable, as the ports are known
    #: once the listeners listen.
    clients: Callable[[], ClientSetup] | None = None
    #: The server's certificate and key files (PEM), to sign Apple profiles.
    certificate: tuple[Path, Path] | None = None
    #: This server's authserv-id in Authentication-Results (RFC 8601 §2.5): the message view
    #: trusts only verdicts under it.  "": trust none.
    authserv_id: str = ""
    #: Changes the passwords of local accounts (the settings page).
    passwords: IPasswordChanger | None = None
    #: Sending under the submission rules (compose).
    submission: ISubmission | None = None
    #: Where each session's attachment uploads wait for their message (compose).
    upload_dir: Path | None = None
    #: The largest message the server sends (``[limits] max_message_size``): a message's
    #: attachments together stay below it.
    max_message_size: int = Limits().max_message_size
    #: The server's figures for ``/metrics`` (docs/metrics.md); None: 404.
    metrics: Metrics | None = None
    #: What ``/healthz`` checks; None: it answers 503.
    health: Health | None = None
    #: Who may read ``/metrics`` and ``/healthz`` (``[metrics] networks``); empty: nobody.
    monitor_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: Who may use the admin console (``[admin]``).
    admin: AdminSettings = attrs.Factory(AdminSettings)
    #: The local accounts and aliases as the admin console manages them.
    accounts: IAccountAdmin | None = None
    #: Where admin changes and refused admin requests are recorded.
    audit: IAuditLog | None = None
    #: The listeners and where each listens (service -> address), for the admin console.
    listening: Callable[[], Mapping[str, str]] | None = None
    #: The outbound queue as the admin console steers it.
    queue_admin: IQueueAdmin | None = None
    #: The filter log as the admin console reads it.
    filter_log: IFilterLogReader | None = None
    #: Where users' mail is stored (the admin console's shard page).
    shards: IShardReport | None = None
    #: Local groups and users' forwarding as the admin console manages them.
    routing: IRoutingAdmin | None = None
    #: Disabling and enabling local accounts (the admin console's user page).
    disabling: IAccountDisabling | None = None
    #: The domains, their DKIM keys and DNS records (the console's domains and DNS pages).
    domains: IDomainAdmin | None = None
    #: The TLS certificates served and the ACME state (the console's certificates page).
    certificates: ICertificateStatus | None = None
    #: The first-run set-up wizard (``/setup``); None: closed.
    setup: ISetupWizard | None = None
    #: The users of an LDAP directory, listed read-only by the admin console (None: no directory).
    directory_users: IDirectoryUsers | None = None
    #: The vault as the console searches and exports it (None: no vault here).
    vault: IVaultDesk | None = None
    #: The mailing lists (the console's list pages; its ``ctx`` is the lists' context).
    lists: ListService | None = None
    #: The folders shared with users (the lists' archives), read-only (None: none).
    shared: ISharedFolders | None = None


class NotLoggedIn(Exception):
    """A logged-in page was asked for without a live session: redirect to the login."""


class Forged(Exception):
    """A state-changing request without the session's CSRF token: 403."""


class Pages:
    """The shared base of the webmail's pages (see the module's docstring)."""

    app = Klein()

    def __init__(
        self,
        authenticator: Authenticator,
        sessions: SessionStore,
        services: WebServices | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.sessions = sessions
        self.services = services or WebServices()
        self.templates = Environment(
            loader=PackageLoader(__package__, "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )

    # -- language and templates --------------------------------------------------------------

    def language(self, request: IRequest) -> str:
        """The response's language: the user's choice, the browser's, or English."""
        cookie = request.getCookie(i18n.COOKIE.encode())
        return i18n.choose(
            cookie.decode("ascii", "replace") if cookie else None,
            request.getHeader("accept-language"),
        )

    def gettext(self, request: IRequest) -> Callable[[str], str]:
        """``_`` for messages built in Python (errors, flash texts) in the request's language."""
        return i18n.translations(self.language(request)).gettext

    def render(self, request: IRequest, name: str, code: int = 200, **context: Any) -> bytes:
        """A template as the response, in the request's language."""
        lang = self.language(request)
        translations: gettext.NullTranslations = i18n.translations(lang)
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Language", lang.encode())
        if "csrf" not in context:  # every page has the language switch, a form
            session = self.session(request)
            context["csrf"] = session.csrf if session else self.login_token(request)
        page = self.templates.get_template(name).render(
            _=translations.gettext,
            ngettext=translations.ngettext,
            lang=lang,
            languages=i18n.LANGUAGES,
            **context,
        )
        return page.encode("utf-8")

    def render_mail(
        self, request: IRequest, session: WebSession, name: str, code: int = 200, **context: Any
    ) -> bytes:
        """A logged-in page (a template extending ``mail.html``): with the user's address,
        CSRF token and folder tree (``folders``: name, unread count)."""
        folders = context.setdefault("folders", self.folder_tree(session))
        own = {name for name, _ in folders}  # the user's own folder wins over a shared one
        shared = shared_tree(self.services.shared, session.address)
        context.setdefault("shared_folders", [f for f in shared if f[0] not in own])
        admin = self.services.admin
        context.setdefault(
            "admin_console",
            session.address in admin.admins or session.address in admin.domain_admins,
        )
        return self.render(
            request, name, code, csrf=session.csrf, address=session.address, **context
        )

    @staticmethod
    def folder_tree(session: WebSession) -> list[tuple[str, int]]:
        """The user's folders and their unread counts, in the store's order."""
        user = session.login.avatar
        rows = []
        for name in user.list_folders():
            try:
                folder = user.folder(name)
                folder.sync()
            except StoreError:  # deleted by another session or process since the listing
                continue
            rows.append((name, folder.unseen_count()))
        return rows

    # -- sessions and forms --------------------------------------------------------------------

    def session(self, request: IRequest) -> WebSession | None:
        """The request's live session, or None."""
        cookie = request.getCookie(SESSION_COOKIE)
        return self.sessions.get(cookie.decode("ascii", "replace") if cookie else None)

    def peek_session(self, request: IRequest) -> WebSession | None:
        """The request's live session without counting the request as activity, or None."""
        cookie = request.getCookie(SESSION_COOKIE)
        return self.sessions.peek(cookie.decode("ascii", "replace") if cookie else None)

    def user(self, request: IRequest) -> WebSession:
        """The live session of a logged-in page; without one, :class:`NotLoggedIn` (answered
        with a redirect to the login page)."""
        session = self.session(request)
        if session is None:
            raise NotLoggedIn()
        return session

    def checked(self, request: IRequest) -> WebSession:
        """The session of a state-changing request whose CSRF token (the ``csrf`` form field
        or the ``X-CSRF-Token`` header of a script's request) is the session's; otherwise
        :class:`NotLoggedIn` or :class:`Forged` (answered with 403)."""
        session = self.user(request)
        # Only from the body or the header: a token in a URL leaks (logs, Referer, history).
        in_query = b"csrf" in parse_qs(request.uri.partition(b"?")[2])
        token = None if in_query else self.form(request, "csrf")
        if token is None:
            header = request.getHeader(b"x-csrf-token")
            token = header.decode("ascii", "replace") if header else None
        if not same_token(token, session.csrf):
            raise Forged()
        return session

    def start_session(self, request: IRequest, login: Login) -> WebSession:
        """A web session for a successful ``login`` (its cookie set), ended at once when its
        account changes: password set, account disabled or deleted (the SessionRevoker).
        The one way in for ``/login`` and the set-up wizard's ``/setup/login``."""
        session = self.sessions.create(login)
        login.when_revoked(lambda: self.sessions.end(session))
        self.set_cookie(request, SESSION_COOKIE, session.id)
        return session

    @staticmethod
    def form(request: IRequest, name: str, limit: int = 1000) -> str | None:
        """A form field as text (None when absent, too long or not UTF-8)."""
        values = (request.args or {}).get(name.encode())
        if not values or len(values[0]) > limit:
            return None
        try:
            return str(values[0].decode("utf-8"))
        except UnicodeDecodeError:
            return None

    @staticmethod
    def form_list(request: IRequest, name: str, limit: int = 1000, most: int = 1000) -> list[str]:
        """Every value of a repeated form field (checkboxes), at most ``most``, each at most
        ``limit`` bytes; values that are too long or not UTF-8 are left out."""
        found = []
        for value in ((request.args or {}).get(name.encode()) or [])[:most]:
            if len(value) <= limit:
                try:
                    found.append(value.decode("utf-8"))
                except UnicodeDecodeError:
                    continue
        return found

    @staticmethod
    def set_cookie(request: IRequest, name: bytes, value: str, max_age: int | None = None) -> None:
        """A cookie only this host's HTTPS pages see, never scripts, never sent cross-site."""
        request.addCookie(  # type: ignore[call-arg]
            name,
            value.encode(),
            path=b"/",
            max_age=None if max_age is None else str(max_age).encode(),
            secure=True,
            httpOnly=True,
            sameSite="strict",
        )

    @staticmethod
    def redirect(request: IRequest, to: bytes) -> bytes:
        """303 See Other (RFC 9110 §15.4.4): the browser follows it with a GET."""
        request.setResponseCode(303)
        request.setHeader(b"Location", to)
        return b""

    def login_token(self, request: IRequest) -> str:
        """The not-yet-logged-in browser's CSRF token, set as a cookie when it has none."""
        cookie = request.getCookie(LOGIN_COOKIE)
        token = cookie.decode("ascii", "replace") if cookie else ""
        if len(token) < 32:
            token = new_token()
            self.set_cookie(request, LOGIN_COOKIE, token)
        return token

    def forbidden(self, request: IRequest) -> bytes:
        """403: a form without this session's (or this browser's) CSRF token."""
        _ = self.gettext(request)
        return self.render(
            request,
            "error.html",
            403,
            message=_("This form has expired or did not come from this site. Please try again."),
        )

    def error(self, request: IRequest, code: int, message: str) -> bytes:
        """An error page with ``message`` (already translated)."""
        return self.render(request, "error.html", code, message=message)

    @app.handle_errors(NotLoggedIn)
    def not_logged_in(self, request: IRequest, failure: Failure) -> bytes:
        return self.redirect(request, b"/login")

    @app.handle_errors(Forged)
    def forged(self, request: IRequest, failure: Failure) -> bytes:
        return self.forbidden(request)
