"""The first-run set-up wizard (issue 17 point 1, docs/setup-wizard.md): ``/setup``.

Open only while ``<data>/setup.json`` says set-up is not finished
(:class:`~ourmail.interfaces.ISetupWizard`); afterwards every ``/setup`` URL sends the
browser to the admin console, and a POST is refused (403, audit-logged; a sign-in only in the
server log, at most once a minute: anyone may post one).

* ``GET /setup``: the sign-in form (the postmaster's one-time password from the first
  start's log), then the current step, or ``?step=`` a step already done (going back);
* ``POST /setup/login``: sign in through the server's Authenticator (the login throttle),
  as a full admin (``[admin] admins``); audit-logged without the password;
* ``POST /setup/password``, ``/setup/names``, ``/setup/users``, ``/setup/users/done``,
  ``/setup/dkim``, ``/setup/finish``: one step each, with the session's CSRF token; a refused
  value answers 400 with the reason and the form again, nothing stored;
* ``GET /setup/common-passwords.txt``: the list the password rules refuse, for the meter
  (``static/setup.js``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ourmail.auth.login import LoginFailed, LoginUnavailable
from ourmail.auth.login import Session as Login
from ourmail.interfaces import SETUP_STEPS, AccountRefused, Actor, ISetupWizard, SetupState
from ourmail.web.adminpages import MAX_ADDRESS, MAX_PASSWORD, AdminAccess, AdminPages, NotAdmin
from ourmail.web.pages import LOGIN_COOKIE, Pages
from ourmail.web.sessions import same_token

log = Logger()

#: Longest list of domains read (20 names of at most 253 characters, with separators).
MAX_DOMAIN_TEXT = 20 * 256
#: Longest host name (RFC 1035 §2.3.4).
MAX_HOSTNAME = 253
#: Longest local part (RFC 5321 §4.5.3.1.1).
MAX_LOCAL = 64
#: A form field with a control or format character (CR, LF, NUL, bidi overrides).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
#: Longest parser's reason shown for a configuration file that cannot be read.
MAX_REASON = 300
#: Seconds between two server-log lines about sign-ins after set-up is finished.
CLOSED_LOG_INTERVAL = 60.0
#: A refusal because a file cannot be written (the disk, permissions): 503, not 400.
UNAVAILABLE_CODES = ("io", "audit")


class SetupPages(AdminPages):
    """The set-up wizard's routes (see the module docstring)."""

    app = Pages.app
    #: When a sign-in after set-up was last told in the server log.
    _closed_noted = -CLOSED_LOG_INTERVAL

    def setup_open(self) -> bool:
        """Whether set-up is not finished yet (the login page points to ``/setup`` then)."""
        wizard = self.services.setup
        return wizard is not None and wizard.state().open

    @property
    def wizard(self) -> ISetupWizard:
        wizard = self.services.setup
        assert wizard is not None  # every route checks setup_open() first
        return wizard

    # -- sign-in ---------------------------------------------------------------------------

    @app.route("/setup", methods=["GET"])
    async def setup_page(self, request: IRequest) -> bytes:
        if not self.setup_open():
            return self.redirect(request, b"/admin")
        if self.session(request) is None:
            return self._signin_page(request)
        access = self._setup_admin(request, "setup.view")
        state = self.wizard.state()
        step = self.form(request, "step", 20) or ""
        if step not in state.done and step != state.next_step():
            step = state.next_step()
        return await self._step_page(request, access, step)

    def _signin_page(self, request: IRequest, code: int = 200, error: str = "") -> bytes:
        admins = self.services.admin.admins
        return self.render(
            request,
            "setup_signin.html",
            code,
            csrf=self.login_token(request),
            username=self.form(request, "username", MAX_ADDRESS) or (admins[0] if admins else ""),
            error=error,
        )

    @app.route("/setup/login", methods=["POST"])
    async def setup_login(self, request: IRequest) -> bytes:
        cookie = request.getCookie(LOGIN_COOKIE)
        token = cookie.decode("ascii", "replace") if cookie else ""
        if not token or not same_token(self.form(request, "csrf"), token):
            return self.forbidden(request)
        client = getattr(request.getClientAddress(), "host", "unknown")
        _ = self.gettext(request)
        if not self.setup_open():
            # No audit line: anyone with a token from GET /login may post here, and must
            # not fill the audit log; the server log says it at most once a minute.
            self._note_closed_signin(client)
            return self.error(request, 403, _("Set-up is finished."))
        username = (self.form(request, "username", MAX_ADDRESS) or "").strip().lower()
        password = self.form(request, "password", MAX_PASSWORD)
        if not username or not password:
            return self._signin_page(request, 400, _("Enter the address and the password."))
        try:
            login: Login = await self.authenticator.login(
                username, password, client, "web", "setup"
            )
        except LoginFailed:
            actor = Actor(username, "web", client)
            await self._audit(actor, "setup.signin", username, "refused: wrong password")
            return self._signin_page(request, 401, _("Wrong address or password."))
        except LoginUnavailable:
            error = _("Your password cannot be checked right now. Please try again later.")
            return self._signin_page(request, 503, error)
        kept = False
        try:
            # The account the login resolved to (``postmaster`` is postmaster@<primary>).
            address = str(login.avatar.address)
            actor = Actor(address, "web", client)
            if address not in self.services.admin.admins:
                await self._audit(actor, "setup.signin", address, "refused: not an admin")
                return self.error(request, 403, _("This page is for the server's admins only."))
            await self._audit(actor, "setup.signin", address, "ok")
            self.start_session(request, login)
            kept = True
        finally:
            if not kept:  # refused, or the audit log failed: the login is not kept
                login.end()
        return self.redirect(request, b"/setup")

    def _note_closed_signin(self, client: str) -> None:
        """Say in the server log that a sign-in came after set-up was finished, at most once
        every :data:`CLOSED_LOG_INTERVAL` seconds."""
        now = self.sessions.clock.seconds()
        if now - self._closed_noted >= CLOSED_LOG_INTERVAL:
            self._closed_noted = now
            log.warn(
                "set-up sign-in from {client} refused: set-up is finished "
                "(said at most once a minute)",
                client=client,
            )

    def _audit(self, actor: Actor, action: str, target: str, result: str) -> Deferred[None]:
        audit = self.services.audit
        if audit is None:
            return succeed(None)
        return deferToThread(audit.record, actor, action, target, result)

    def _setup_admin(self, request: IRequest, action: str) -> AdminAccess:
        """A full admin (``[admin] admins``) while set-up is open; else :class:`NotAdmin`."""
        access = self.admin(request, action)
        if not access.full or not self.setup_open():
            raise NotAdmin(action, "setup")
        return access

    # -- the steps -------------------------------------------------------------------------

    async def _step_page(
        self, request: IRequest, access: AdminAccess, step: str, code: int = 200, **context: Any
    ) -> bytes:
        state = self.wizard.state()
        if step == "names":
            served = await self.accounts.domains()
            context.setdefault("domains_text", "\n".join(state.domains or served))
            context.setdefault("hostname", state.hostname or self._hostname())
        if step == "done":
            records = [(d, await self.wizard.records(d)) for d in state.domains]
            context["records"] = records
            needed = self.wizard.restart_needed()
            context["restart"] = [w for w in needed if not w.startswith("removed:")]
            context["removed"] = [w.partition(":")[2] for w in needed if w.startswith("removed:")]
        return self.render(
            request,
            "setup.html",
            code,
            csrf=access.session.csrf,
            address=access.session.address,
            local=access.session.address.rpartition("@")[0],
            state=state,
            step=step,
            steps=SETUP_STEPS,
            min_password=self.accounts.min_password(),
            **context,
        )

    def _hostname(self) -> str:
        clients = self.services.clients
        return clients().hostname if clients is not None else ""

    async def _change(
        self,
        request: IRequest,
        step: str,
        action: str,
        change: Callable[[Actor], Deferred[SetupState]],
        then: str = "",
        **typed: Any,
    ) -> bytes:
        """A step's POST: a full admin, the CSRF token, the change; then the next page, or
        the step again with the reason (400).  A value the form checks refuse before the
        wizard is asked is audit-logged here; the wizard logs its own refusals."""
        access = self._setup_admin(request, action)
        self.checked(request)
        actor = self.actor(request, access)
        try:
            try:
                pending = change(actor)
            except AccountRefused as e:
                await self._audit(actor, action, e.subject, f"refused: {e.code}")
                raise
            await pending
        except AccountRefused as e:
            error = self.setup_refusal(request, e)
            code = 503 if e.code in UNAVAILABLE_CODES else 400
            if code == 503:
                log.warn("set-up step {action} not done: {why}", action=action, why=str(e))
            return await self._step_page(request, access, step, code, error=error, **typed)
        return self.redirect(request, b"/setup" + (b"?step=" + then.encode() if then else b""))

    def _text(self, request: IRequest, name: str, limit: int, lines: bool = False) -> str:
        """A form field with no control character (but line breaks, if ``lines``), within
        ``limit``; else ``too-long`` or ``control`` (:class:`AccountRefused`)."""
        value = self.form(request, name, limit)
        if value is None and (request.args or {}).get(name.encode()):
            raise AccountRefused("too-long", "too long", name)
        if value is not None and lines:
            value = value.replace("\r\n", "\n").replace("\n", " ")
        if value is not None and _CONTROL.search(value):
            raise AccountRefused("control", "control characters", name)
        return value or ""

    def _password(self, request: IRequest) -> str:
        password = self._text(request, "password", MAX_PASSWORD)
        if password != self.form(request, "again", MAX_PASSWORD):
            raise AccountRefused("mismatch", "the passwords differ")
        return password

    @app.route("/setup/password", methods=["POST"])
    async def setup_password(self, request: IRequest) -> bytes:
        def change(actor: Actor) -> Deferred[SetupState]:
            password = self._password(request)
            session = self.user(request)

            def others_end(done: tuple[SetupState, Hashable]) -> SetupState:
                self.sessions.end_others(session)
                return done[0]

            # The admin's own password: this session goes on; their other sessions end.
            changed = self.wizard.set_password(actor, actor.who, password)
            return session.login.keep_through(changed, lambda done: done[1]).addCallback(others_end)

        return await self._change(request, "password", "setup.password", change)

    @app.route("/setup/names", methods=["POST"])
    async def setup_names(self, request: IRequest) -> bytes:
        typed = {
            "domains_text": self.form(request, "domains", MAX_DOMAIN_TEXT) or "",
            "hostname": self.form(request, "hostname", MAX_HOSTNAME) or "",
        }

        def change(actor: Actor) -> Deferred[SetupState]:
            raw = self._text(request, "domains", MAX_DOMAIN_TEXT, True).replace(",", " ")
            hostname = self._text(request, "hostname", MAX_HOSTNAME).strip()
            return self.wizard.set_names(actor, raw.split(), hostname)

        return await self._change(request, "names", "setup.names", change, **typed)

    @app.route("/setup/users", methods=["POST"])
    async def setup_users(self, request: IRequest) -> bytes:
        typed = {"typed_local": self.form(request, "local", MAX_LOCAL) or ""}

        def change(actor: Actor) -> Deferred[SetupState]:
            local = self._text(request, "local", MAX_LOCAL).strip()
            domain = self._text(request, "domain", MAX_HOSTNAME)
            if not local or "@" in local or domain not in self.wizard.state().domains:
                raise AccountRefused("bad-address", "not an address", local)
            password = self._password(request)
            return self.wizard.add_user(actor, f"{local}@{domain}", password)

        return await self._change(request, "users", "user.add", change, "users", **typed)

    @app.route("/setup/users/done", methods=["POST"])
    async def setup_users_done(self, request: IRequest) -> bytes:
        return await self._change(request, "users", "setup.users", self.wizard_call("users_done"))

    @app.route("/setup/dkim", methods=["POST"])
    async def setup_dkim(self, request: IRequest) -> bytes:
        change = self.wizard_call("make_dkim")
        return await self._change(request, "dkim", "setup.dkim", change, "dkim")

    @app.route("/setup/finish", methods=["POST"])
    async def setup_finish(self, request: IRequest) -> bytes:
        return await self._change(request, "done", "setup.finish", self.wizard_call("finish"))

    def wizard_call(self, name: str) -> Callable[[Actor], Deferred[SetupState]]:
        """The wizard's step ``name`` that takes only the actor."""
        return lambda actor: getattr(self.wizard, name)(actor)

    @app.route("/setup/common-passwords.txt", methods=["GET"])
    def setup_common_passwords(self, request: IRequest) -> bytes:
        wizard = self.services.setup
        if wizard is None:
            return self.error(request, 404, self.gettext(request)("There is no such page."))
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"public, max-age=86400")
        return wizard.common_list()

    # -- texts -----------------------------------------------------------------------------

    def setup_refusal(self, request: IRequest, refused: AccountRefused) -> str:
        """What a refused step says, in the request's language."""
        _ = self.gettext(request)
        subject = refused.subject
        texts: dict[str, Callable[[], str]] = {
            "bad-domain": lambda: _("%(name)s is not a domain name.") % {"name": subject},
            "bad-hostname": lambda: (
                _("%(name)s is not a full host name (such as mail.example.org).")
                % {"name": subject}
            ),
            "no-domains": lambda: _("Choose at least one mail domain."),
            "too-many": lambda: _("Choose at most 20 domains here; add more later."),
            "not-chosen": lambda: _("%(domain)s is not one of your domains.") % {"domain": subject},
            "contains-name": lambda: _("The password must not contain the name of the address."),
            "common-password": lambda: _(
                "This password is one of the most used ones: choose another."
            ),
            "mismatch": lambda: _("The two passwords differ."),
            "too-long": lambda: _("A field is too long."),
            "control": lambda: _("A field contains line breaks or other control characters."),
            "bad-config": lambda: " ".join(
                (
                    _("The configuration file %(path)s cannot be read, so nothing was changed.")
                    % {"path": subject},
                    _("The reason: %(reason)s.") % {"reason": _parser_reason(refused)},
                    _("Correct it, or undo your last edit, and try again."),
                )
            ),
            "no-dkim": lambda: (
                _("%(domain)s has no DKIM key yet: make the keys in the DKIM step.")
                % {"domain": subject}
            ),
            "order": lambda: _("Please do the steps in order."),
            "closed": lambda: _("Set-up is finished."),
            "dkim": lambda: _("The DKIM key cannot be made: see the server's log."),
            "io": lambda: _(
                "A file cannot be written (a full disk?), so the step was not done: see the log."
            ),
        }
        text = texts.get(refused.code)
        return text() if text else self.refusal_text(request, refused)


def _parser_reason(refused: AccountRefused) -> str:
    """The parser's reason of a ``bad-config`` refusal, without the file's name, on one line
    and at most :data:`MAX_REASON` characters (the page escapes it)."""
    reason = str(refused).removeprefix(f"{refused.subject}: ")
    return " ".join(_CONTROL.sub(" ", reason).split())[:MAX_REASON].rstrip(".")
