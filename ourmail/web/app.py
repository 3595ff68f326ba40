"""The webmail's klein application: every part's pages (the message list, the message view,
compose, settings, live updates, client autoconfiguration) on one router, and its own routes:
login, logout, the language switch and the static files (docs/webmail.md#serving-and-login):

* ``GET /login``: the login form; ``POST /login``: log in through the server's Authenticator
  (the portal and failed-login throttle IMAP uses), then a new session and a redirect to ``/``;
* ``POST /logout``: end the session on the server;
* ``POST /language``: keep the user's language in a cookie;
* ``GET /static/<name>``: the files shipped in ``ourmail/web/static/``.

Every POST carries a CSRF token: the session's once logged in, before that a random token
kept in a cookie of its own (the double-submit pattern), so even the login form cannot be
posted from another site.  A request without the right token gets 403.
"""

from __future__ import annotations

import mimetypes
from importlib import resources

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from ourmail.auth.login import Authenticator, LoginFailed, LoginUnavailable
from ourmail.auth.login import Session as Login
from ourmail.config import Limits
from ourmail.web import i18n
from ourmail.web.admindirectory import AdminDirectoryPages
from ourmail.web.admindisable import AdminDisablePages
from ourmail.web.admindomains import AdminDomainsPages
from ourmail.web.admingroups import AdminGroupsPages
from ourmail.web.adminlists import AdminListsPages
from ourmail.web.adminops import AdminOpsPages
from ourmail.web.adminpages import AdminPages
from ourmail.web.adminvault import AdminVaultPages
from ourmail.web.archivepages import ArchivePages
from ourmail.web.autoconfig import AutoconfigPages
from ourmail.web.compose import ComposePages
from ourmail.web.listpages import ListPages
from ourmail.web.listpublic import ListPublicPages
from ourmail.web.live import LivePages
from ourmail.web.metricspages import MetricsPages
from ourmail.web.pages import LOGIN_COOKIE, SESSION_COOKIE, Pages, WebServices
from ourmail.web.read import ReadPages
from ourmail.web.sessions import SessionStore, same_token
from ourmail.web.settings import SettingsPages
from ourmail.web.setuppages import SetupPages
from ourmail.web.site import CountedSite

log = Logger()

#: Longest user name and password read from the login form.
MAX_USER, MAX_PASSWORD = 320, 1024
#: Seconds a browser keeps the language choice.
LANGUAGE_MAX_AGE = 365 * 24 * 3600


def _static_files() -> dict[str, tuple[bytes, bytes]]:
    """Every file of ``static/``: name -> (content type, content).  Read once: they are few
    and small, and a name outside this table can never be served."""
    files: dict[str, tuple[bytes, bytes]] = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        if entry.is_file():
            kind = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind.endswith("javascript"):
                kind += "; charset=utf-8"
            files[entry.name] = (kind.encode(), entry.read_bytes())
    return files


class WebApp(
    ListPublicPages,
    ListPages,
    ArchivePages,
    LivePages,
    ReadPages,
    ComposePages,
    SettingsPages,
    AutoconfigPages,
    MetricsPages,
    AdminVaultPages,
    AdminOpsPages,
    AdminListsPages,
    AdminGroupsPages,
    AdminDisablePages,
    AdminDomainsPages,
    SetupPages,
    AdminDirectoryPages,
    AdminPages,
    Pages,
):
    """The webmail of one server process: every part's routes, its sessions and templates."""

    app = Pages.app

    def __init__(
        self,
        authenticator: Authenticator,
        sessions: SessionStore,
        services: WebServices | None = None,
    ) -> None:
        super().__init__(authenticator, sessions, services)
        self.static = _static_files()

    def site(self, limits: Limits) -> server.Site:
        """The ``web`` listener's factory (TLS is added around it by service.py)."""
        return CountedSite(
            self.app.resource(), limits, lambda request: self.peek_session(request) is not None
        )

    # -- routes ----------------------------------------------------------------------------

    @app.route("/login", methods=["GET"])
    def login_page(self, request: IRequest) -> bytes:
        if self.session(request) is not None:
            return self.redirect(request, b"/")
        return self.render(
            request, "login.html", csrf=self.login_token(request), setup_open=self.setup_open()
        )

    @app.route("/login", methods=["POST"])
    async def login(self, request: IRequest) -> bytes:
        cookie = request.getCookie(LOGIN_COOKIE)
        token = cookie.decode("ascii", "replace") if cookie else ""
        if not token or not same_token(self.form(request, "csrf"), token):
            return self.forbidden(request)
        _ = self.gettext(request)
        username = self.form(request, "username", MAX_USER)
        password = self.form(request, "password", MAX_PASSWORD)
        if not username or not password:
            error = _("Enter your address and password.")
            return self.render(request, "login.html", 400, csrf=token, error=error)
        client = getattr(request.getClientAddress(), "host", "unknown")
        try:
            login: Login = await self.authenticator.login(username, password, client, "web", "form")
        except LoginFailed:
            error = _("Wrong address or password.")
            return self.render(
                request, "login.html", 401, csrf=token, error=error, username=username
            )
        except LoginUnavailable:
            error = _("Your password cannot be checked right now. Please try again later.")
            return self.render(
                request, "login.html", 503, csrf=token, error=error, username=username
            )
        self.start_session(request, login)
        return self.redirect(request, b"/")

    @app.route("/logout", methods=["POST"])
    def logout(self, request: IRequest) -> bytes:
        session = self.session(request)
        if session is None:
            return self.redirect(request, b"/login")
        if not same_token(self.form(request, "csrf"), session.csrf):
            return self.forbidden(request)
        self.sessions.end(session)
        self.set_cookie(request, SESSION_COOKIE, "", max_age=0)
        return self.redirect(request, b"/login")

    @app.route("/language", methods=["POST"])
    def choose_language(self, request: IRequest) -> bytes:
        session = self.session(request)
        cookie = request.getCookie(LOGIN_COOKIE)
        login_token = cookie.decode("ascii", "replace") if cookie else ""
        expected = session.csrf if session else login_token
        if not expected or not same_token(self.form(request, "csrf"), expected):
            return self.forbidden(request)
        lang = self.form(request, "lang", 10)
        if lang is not None and lang in i18n.LANGUAGES:
            self.set_cookie(request, i18n.COOKIE.encode(), lang, LANGUAGE_MAX_AGE)
        return self.redirect(request, b"/" if session else b"/login")

    @app.route("/static/<string:name>", methods=["GET"])
    def static_file(self, request: IRequest, name: str) -> bytes:
        found = self.static.get(name)
        if found is None:
            return self.not_found(request, Failure(KeyError(name)))
        kind, content = found
        request.setHeader(b"Content-Type", kind)
        request.setHeader(b"Cache-Control", b"public, max-age=3600")
        return content

    # -- errors: a page in the user's language, never a traceback ----------------------------

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        code = getattr(failure.value, "code", None) or 400
        if code == 404:
            return self.not_found(request, failure)
        _ = i18n.translations(self.language(request)).gettext
        return self.render(request, "error.html", code, message=_("This request is not valid."))

    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        _ = i18n.translations(self.language(request)).gettext
        return self.render(request, "error.html", 404, message=_("There is no such page."))

    @app.handle_errors(Exception)
    def server_error(self, request: IRequest, failure: Failure) -> bytes:
        log.failure("web request {uri} failed", failure, uri=request.uri[:200])
        _ = i18n.translations(self.language(request)).gettext
        return self.render(
            request, "error.html", 500, message=_("Something went wrong on the server.")
        )
