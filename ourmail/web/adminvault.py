"""The admin console's vault pages (issue 18 points 6, 7 and 8, docs/vault.md#the-console): search
the whole organisation's vaulted mail, look at one message's envelope and header section, and
export what a search found.

Routes:

* ``GET /admin/vault?from=&to=&address=&since=&until=&subject=&words=&attachment=&message_id=``
  ``&page=``: the search form, and with any criterion the messages found, 50 a page, oldest first;
* ``GET /admin/vault/message?seq=``: one message's envelope, hashes and header section;
* ``POST /admin/vault/export``: the same criteria; the messages found as a zip of ``.eml``
  files with the manifest and the chain proof (at most :data:`MAX_EXPORT`; the command
  ``ourmail vault export`` has no bound).

Only an admin who holds the vault role (``[admin] vault_admins``) gets any of them: anyone
else is answered 403 and recorded in the audit log.  Each search, view and export is recorded
by :class:`~ourmail.interfaces.IVaultDesk` in the vault's own audit trail before its answer.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ourmail.interfaces import IVaultDesk, VaultHit, VaultQuery, VaultRefused
from ourmail.web.adminops import MAX_PAGE, AdminOpsPages, BadInput, utc
from ourmail.web.adminpages import MAX_ADDRESS, PAGE_SIZE, AdminAccess, NotAdmin
from ourmail.web.pages import Pages
from ourmail.web.streaming import stream

#: Most messages one export from the console holds.
MAX_EXPORT = 10_000
#: Longest subject, words or attachment text read from the form.
MAX_TEXT = 500
#: Longest Message-ID read (RFC 5322 §3.6.4 sets none; a line is at most 998 octets).
MAX_MESSAGE_ID = 998
#: The form's fields: (form name, VaultQuery field, longest value).
TEXT_FIELDS = (
    ("from", "sender", MAX_ADDRESS),
    ("to", "recipient", MAX_ADDRESS),
    ("address", "address", MAX_ADDRESS),
    ("subject", "subject", MAX_TEXT),
    ("words", "words", MAX_TEXT),
    ("attachment", "attachment", MAX_TEXT),
    ("message_id", "message_id", MAX_MESSAGE_ID),
)
#: The piece of an export sent at a time.
PIECE = 256 * 1024


class AdminVaultPages(AdminOpsPages):
    """The vault pages (see the module docstring)."""

    app = Pages.app

    def vault_admin(self, request: IRequest, action: str) -> tuple[AdminAccess, IVaultDesk]:
        """An admin with the vault role and the vault; anyone else: :class:`NotAdmin`."""
        access = self.admin(request, action)
        desk = self.services.vault
        if desk is None or not desk.may_use(access.session.address):
            raise NotAdmin(action)
        return access, desk

    def vault_query(self, request: IRequest) -> tuple[VaultQuery, dict[str, str]]:
        """The search the form asks for, and its fields as given (for links and the form);
        a field too long, with control characters or a date that is none: :class:`BadInput`."""
        _ = self.gettext(request)
        given: dict[str, str] = {}
        values: dict[str, Any] = {}
        for name, field, limit in TEXT_FIELDS:
            text = self.text_field(request, name, limit)
            if text:
                given[name] = values[field] = text
        for name in ("since", "until"):
            text = self.text_field(request, name, 10)
            if not text:
                continue
            try:
                day = datetime.date.fromisoformat(text)
            except ValueError:
                raise BadInput(_("A date must be written as 2026-12-31.")) from None
            given[name] = text
            start = datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp()
            if name == "since":
                values["start"] = start
            else:
                values["end"] = start + 86400  # "until" includes the whole day named

        return VaultQuery(**values), given

    @app.route("/admin/vault", methods=["GET"])
    async def admin_vault(self, request: IRequest) -> bytes:
        access, desk = self.vault_admin(request, "vault.search")
        query, given = self.vault_query(request)
        page = min(self.page_number(request), MAX_PAGE)
        total, exact, pages = 0, True, 1
        hits: list[VaultHit] = []
        if not query.empty():
            try:
                total, exact, hits = await desk.search(
                    self.actor(request, access), query, (page - 1) * PAGE_SIZE, PAGE_SIZE
                )
            except VaultRefused as e:
                return self.vault_refused(request, e)
            # A count that stopped early is a lower bound: there is at least one more page.
            pages = max(1, -(-total // PAGE_SIZE)) if exact else page + 1

        def link(number: int) -> str:
            return "/admin/vault?" + urlencode({**given, "page": number})

        return self.render_admin(
            request,
            access,
            "admin_vault.html",
            given=given,
            asked=not query.empty(),
            total=total,
            exact=exact,
            rows=[(hit, utc(hit.time)) for hit in hits],
            page=page,
            pages=pages,
            previous=link(page - 1) if page > 1 else None,
            next=link(page + 1) if page < pages else None,
            max_export=MAX_EXPORT,
        )

    @app.route("/admin/vault/message", methods=["GET"])
    async def admin_vault_message(self, request: IRequest) -> bytes:
        access, desk = self.vault_admin(request, "vault.view")
        raw = self.form(request, "seq", 12) or ""
        if not (raw.isascii() and raw.isdigit() and int(raw) > 0):
            _ = self.gettext(request)
            raise BadInput(_("This is not a message of the vault."))
        try:
            message = await desk.message(self.actor(request, access), int(raw))
        except VaultRefused as e:
            return self.vault_refused(request, e)
        return self.render_admin(
            request,
            access,
            "admin_vault_message.html",
            m=message,
            e=message.envelope,
            captured=utc(message.time),
            arrived=utc(message.envelope.arrival) if message.envelope.arrival else "",
        )

    @app.route("/admin/vault/export", methods=["POST"])
    async def admin_vault_export(self, request: IRequest) -> Any:
        access, desk = self.vault_admin(request, "vault.export")
        self.checked(request)
        query, _given = self.vault_query(request)
        if query.empty():
            _ = self.gettext(request)
            raise BadInput(_("Search first: an export holds the messages a search finds."))
        try:
            made = Path(await desk.export(self.actor(request, access), query, MAX_EXPORT))
        except VaultRefused as e:
            return self.vault_refused(request, e)
        try:
            size = (await deferToThread(os.stat, made)).st_size
            name = time.strftime("vault-export-%Y%m%dT%H%M%SZ.zip", time.gmtime())
            request.setHeader(b"Content-Type", b"application/zip")
            request.setHeader(b"Content-Disposition", f'attachment; filename="{name}"'.encode())
            request.setHeader(b"Content-Length", str(size).encode())
            await stream(request, _pieces(made))
        finally:
            await deferToThread(made.unlink, True)
        return b""

    def vault_refused(self, request: IRequest, refused: VaultRefused) -> bytes:
        """The page a :class:`VaultRefused` gives, in the request's language."""
        _ = self.gettext(request)
        if refused.code == "not-found":
            return self.error(request, 404, _("This message is not in the vault."))
        if refused.code == "bad-query":
            text = _("This search cannot be made: %(reason)s")
            return self.error(request, 400, text % {"reason": str(refused)})
        if refused.code == "too-many":
            text = _(
                "More than %(n)s messages match: narrow the search or use ourmail vault export."
            )
            return self.error(request, 413, text % {"n": MAX_EXPORT})
        if refused.code == "audit":
            text = _("The vault's audit trail cannot be written, so nothing is shown.")
            return self.error(request, 503, text)
        if refused.code == "indexing":
            text = _("The search index is catching up (%(done)s); try again in a few minutes.")
            return self.error(request, 503, text % {"done": str(refused)})
        if refused.code == "busy":
            text = _("Another export is being written; try again when it is done.")
            return self.error(request, 503, text)
        if refused.code == "no-room":
            text = _("The vault's disk has too little free space for this export: %(reason)s")
            return self.error(request, 507, text % {"reason": str(refused)})
        if refused.code == "failed":
            text = _("The vault could not be read or written: %(reason)s")
            return self.error(request, 503, text % {"reason": str(refused)})
        return self.error(request, 503, _("The vault is not available now."))


def _pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            yield piece
