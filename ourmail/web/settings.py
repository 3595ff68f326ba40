"""The settings page: password change, signature and the out-of-office reply (issue 16 point 9).

Routes (docs/webmail.md#settings-and-out-of-office):

* ``GET /settings``: the three sections, each a form;
* ``POST /settings/password``: change the password of a local account.  The current password
  is checked through the server's Authenticator (the portal and the failed-login throttle of
  every login), the new one is hashed and stored through ``IPasswordChanger`` as ``ourmail
  user passwd`` does, and the user's other web sessions end.  A password kept by the
  directory (LDAP) is not changed here: the page says so;
* ``POST /settings/signature``: the signature compose adds (``IPreferences`` key
  ``compose.signature``, plain text);
* ``POST /settings/vacation``: the out-of-office reply the server sends
  (``IPreferences`` key ``vacation``, :mod:`ourmail.vacation.settings`).

A change that is kept redirects (303) to ``/settings?saved=<section>``, which confirms it; a
form that cannot be kept is shown again with its error, as typed (passwords excepted).
"""

from __future__ import annotations

import datetime
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ourmail.auth.login import LoginFailed, LoginUnavailable
from ourmail.auth.login import Session as Login
from ourmail.vacation.settings import (
    DEFAULT_DAYS,
    KEY,
    MAX_DAYS,
    MAX_SUBJECT,
    MAX_TEXT,
    MIN_DAYS,
    Vacation,
    one_line,
    parse_day,
)
from ourmail.web.pages import Pages
from ourmail.web.sessions import WebSession

log = Logger()

#: The ``IPreferences`` key of the signature (read by compose).
SIGNATURE_KEY = "compose.signature"
#: Longest signature, in characters.
MAX_SIGNATURE = 2000
#: Shortest new password, in characters.
MIN_PASSWORD = 10
#: Longest password read from the form (as at login).
MAX_PASSWORD = 1024
#: The sections ``?saved=`` may confirm.
SECTIONS = ("password", "signature", "vacation")


def _text_field(value: str | None) -> str:
    """A textarea's value with its line ends as ``\\n`` (browsers send CRLF, HTML §4.10.11)."""
    return (value or "").replace("\r\n", "\n").replace("\r", "\n")


class SettingsPages(Pages):
    """The routes of the settings page (see the module docstring)."""

    app = Pages.app

    @app.route("/settings", methods=["GET"])
    def settings_page(self, request: IRequest) -> bytes:
        session = self.user(request)
        saved = self.form(request, "saved", 20)
        return self.show_settings(request, session, saved=saved if saved in SECTIONS else None)

    def show_settings(
        self, request: IRequest, session: WebSession, code: int = 200, **context: Any
    ) -> bytes:
        """The settings page with the user's kept values, unless ``context`` has others."""
        prefs = self.services.preferences
        passwords = self.services.passwords
        kept = Vacation.from_json(prefs.get(session.address, KEY) if prefs is not None else None)
        context.setdefault("vacation", vacation_form(kept))
        if "signature" not in context:
            signature = prefs.get(session.address, SIGNATURE_KEY) if prefs is not None else None
            context["signature"] = signature if isinstance(signature, str) else ""
        return self.render_mail(
            request,
            session,
            "settings.html",
            code,
            current=None,
            local_password=passwords is not None and passwords.manages(session.address),
            replying=kept.active_on(datetime.date.today()),
            min_password=MIN_PASSWORD,
            max_signature=MAX_SIGNATURE,
            max_subject=MAX_SUBJECT,
            max_text=MAX_TEXT,
            min_days=MIN_DAYS,
            max_days=MAX_DAYS,
            **context,
        )

    # -- password ------------------------------------------------------------------------------

    @app.route("/settings/password", methods=["POST"])
    async def change_password(self, request: IRequest) -> bytes:
        session = self.checked(request)
        _ = self.gettext(request)
        passwords = self.services.passwords
        if passwords is None or not passwords.manages(session.address):
            error = _("Your password is kept by your organisation's directory: change it there.")
            return self.show_settings(request, session, 400, password_error=error)
        current = self.form(request, "current", MAX_PASSWORD)
        new = self.form(request, "new", MAX_PASSWORD)
        again = self.form(request, "again", MAX_PASSWORD)
        refused = self.new_password_error(request, session, current, new, again)
        if refused is not None:
            return self.show_settings(request, session, 400, password_error=refused)
        assert current is not None and new is not None
        client = getattr(request.getClientAddress(), "host", "unknown")
        try:
            login: Login = await self.authenticator.login(session.address, current, client, "web")
        except LoginFailed:
            error = _("Your current password is not right.")
            return self.show_settings(request, session, 401, password_error=error)
        except LoginUnavailable:
            error = _("Your password cannot be checked right now. Please try again later.")
            return self.show_settings(request, session, 503, password_error=error)
        login.end()  # only a check: this login's session is not kept
        try:
            # This session goes on with the new password; the user's others end.
            await session.login.keep_through(passwords.change(session.address, new))
        except ValueError:
            log.failure("web password change of {user} failed", user=session.address)
            error = _("Your password could not be changed. Please try again later.")
            return self.show_settings(request, session, 503, password_error=error)
        ended = self.sessions.end_others(session)
        log.info(
            "web password changed for {user}; {ended} other web sessions ended",
            user=session.address,
            ended=ended,
        )
        return self.redirect(request, b"/settings?saved=password")

    def new_password_error(
        self,
        request: IRequest,
        session: WebSession,
        current: str | None,
        new: str | None,
        again: str | None,
    ) -> str | None:
        """Why the new password cannot be taken (translated), or None."""
        _ = self.gettext(request)
        if not current or not new or not again:
            return _("Enter your current password and the new one twice.")
        if new != again:
            return _("The two new passwords are not the same.")
        if len(new) < MIN_PASSWORD:
            return _("The new password must have at least 10 characters.")
        address = session.address.lower()
        if new.strip().lower() in (address, address.partition("@")[0]):
            return _("The new password must not be your address.")
        if new == current:
            return _("The new password must differ from the current one.")
        return None

    # -- signature -----------------------------------------------------------------------------

    @app.route("/settings/signature", methods=["POST"])
    async def save_signature(self, request: IRequest) -> bytes:
        session = self.checked(request)
        _ = self.gettext(request)
        # Up to 4 octets a character in UTF-8, and CR LF for each line end.
        text = _text_field(self.form(request, "signature", 5 * MAX_SIGNATURE))
        if len(text) > MAX_SIGNATURE:
            error = _("The signature is too long.")
            return self.show_settings(request, session, 400, signature=text, signature_error=error)
        if not await self.keep(session, SIGNATURE_KEY, text.rstrip() or None):
            error = _("Your settings could not be saved. Please try again later.")
            return self.show_settings(request, session, 503, signature=text, signature_error=error)
        return self.redirect(request, b"/settings?saved=signature")

    # -- out-of-office -------------------------------------------------------------------------

    @app.route("/settings/vacation", methods=["POST"])
    async def save_vacation(self, request: IRequest) -> bytes:
        session = self.checked(request)
        _ = self.gettext(request)
        form = {
            "enabled": self.form(request, "enabled", 10) == "on",
            "subject": one_line(self.form(request, "subject", 4 * MAX_SUBJECT) or ""),
            "text": _text_field(self.form(request, "text", 5 * MAX_TEXT)),
            "first": (self.form(request, "first", 20) or "").strip(),
            "last": (self.form(request, "last", 20) or "").strip(),
            "days": (self.form(request, "days", 10) or "").strip(),
        }
        vacation, error = self.read_vacation(request, form)
        if vacation is not None and not await self.keep(session, KEY, vacation.to_json()):
            error = _("Your settings could not be saved. Please try again later.")
        if vacation is None or error is not None:
            return self.show_settings(request, session, 400, vacation=form, vacation_error=error)
        return self.redirect(request, b"/settings?saved=vacation")

    def read_vacation(
        self, request: IRequest, form: dict[str, Any]
    ) -> tuple[Vacation | None, str | None]:
        """The settings of the vacation form, or (None, why not: translated)."""
        _ = self.gettext(request)
        if len(form["subject"]) > MAX_SUBJECT or len(form["text"]) > MAX_TEXT:
            return None, _("The subject or the text of the reply is too long.")
        if form["enabled"] and not form["text"].strip():
            return None, _("Write the text of your reply.")
        try:
            first, last = parse_day(form["first"]), parse_day(form["last"])
        except ValueError:
            return None, _("A date is not valid.")
        if first is not None and last is not None and last < first:
            return None, _("The last day is before the first day.")
        days = form["days"] or str(DEFAULT_DAYS)
        if not (days.isascii() and days.isdigit()) or not MIN_DAYS <= int(days) <= MAX_DAYS:
            return None, _("Reply once every 1 to 90 days.")
        vacation = Vacation(
            enabled=form["enabled"],
            subject=form["subject"],
            text=form["text"].rstrip(),
            first=first,
            last=last,
            days=int(days),
        )
        return vacation, None

    async def keep(self, session: WebSession, key: str, value: object) -> bool:
        """Keep ``value`` in the user's settings (durable when True)."""
        prefs = self.services.preferences
        if prefs is None:
            return False
        try:
            await prefs.set(session.address, key, value)
        except (ValueError, OSError):
            log.failure("settings of {user} not saved", user=session.address)
            return False
        return True


def vacation_form(vacation: Vacation) -> dict[str, Any]:
    """The vacation form's fields for kept settings."""

    def day(value: datetime.date | None) -> str:
        return value.isoformat() if value else ""

    return {
        "enabled": vacation.enabled,
        "subject": vacation.subject,
        "text": vacation.text,
        "first": day(vacation.first),
        "last": day(vacation.last),
        "days": str(vacation.days),
    }
