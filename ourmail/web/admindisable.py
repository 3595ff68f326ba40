"""The admin console's disable and enable forms on a user's page (issue 17 point 4,
docs/admin-console.md#disabled-accounts).

Routes: ``POST /admin/user/disable`` (``address``, ``reason``) and ``POST /admin/user/enable``
(``address``).  Both go through :class:`~ourmail.interfaces.IAccountDisabling` (the code of
``ourmail user disable`` / ``enable``, audit-logged) after the same checks as every change to
an account (:meth:`AdminPages.admin`, the CSRF token, a domain admin's domains).  An admin cannot
disable their own account here.  The account's web sessions in this process end at once; its
IMAP, POP3 and submission sessions when the server's session revoker sees the change (within
about a second).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ourmail.interfaces import AccountRefused, Actor, IAccountDisabling
from ourmail.manage.accountops import MAX_REASON
from ourmail.web.adminpages import AdminPages, no_control

log = Logger()

#: Longest reason read from the form, in bytes (UTF-8: up to 4 a character).
MAX_REASON_BYTES = 4 * MAX_REASON


class AdminDisablePages(AdminPages):
    """The disable and enable routes (see the module docstring)."""

    app = AdminPages.app

    @property
    def disabling(self) -> IAccountDisabling:
        disabling = self.services.disabling
        if disabling is None:
            raise AccountRefused("unsupported", "accounts cannot be disabled here")
        return disabling

    def refusal_text(self, request: IRequest, refused: AccountRefused) -> str:
        _ = self.gettext(request)
        if refused.code == "bad-reason":
            return _("The reason must be one line of at most %(n)s characters.") % {"n": MAX_REASON}
        if refused.code == "not-disabled":
            return _("%(address)s is not disabled.") % {"address": refused.subject}
        if refused.code == "own-account":
            return _("You cannot disable your own account here.")
        return super().refusal_text(request, refused)

    def refused(
        self, actor: Actor, action: str, refused: AccountRefused, detail: str = ""
    ) -> Deferred[None]:
        """Fail with ``refused`` (a refusal of the form's own checks, before
        :class:`IAccountDisabling` is asked) after its audit line, as that code records its
        own refusals; an audit log that cannot be written is logged."""
        audit = self.services.audit
        if audit is None:
            return fail(refused)
        result = f"refused: {refused.code}"
        d = deferToThread(audit.record, actor, action, refused.subject, result, detail)
        d.addErrback(lambda f: log.failure("the audit log cannot be written", f))
        return d.addCallback(lambda _: fail(refused))

    @app.route("/admin/user/disable", methods=["POST"])
    async def admin_user_disable(self, request: IRequest) -> bytes:
        sent = b"reason" in (request.args or {})
        reason = self.form(request, "reason", MAX_REASON_BYTES)
        admin = self.admin(request, "user.disable")

        def change(actor: Actor, address: str) -> Any:
            if address == admin.session.address:
                refused = AccountRefused("own-account", "not your own account", address)
                return self.refused(actor, "user.disable", refused)
            if (reason is None and sent) or (reason is not None and not no_control(reason)):
                refused = AccountRefused("bad-reason", "not one short line of text", address)
                return self.refused(actor, "user.disable", refused)
            d = self.disabling.disable(actor, address, (reason or "").strip())
            # This process's web sessions end now; the others when the revoker sees the file.
            return d.addCallback(lambda _: self.sessions.end_user(address))

        return await self._user_change(request, "user.disable", change)

    @app.route("/admin/user/enable", methods=["POST"])
    async def admin_user_enable(self, request: IRequest) -> bytes:
        def change(actor: Actor, address: str) -> Any:
            return self.disabling.enable(actor, address)

        return await self._user_change(request, "user.enable", change)
