"""The admin console's mailing lists (issue 19, docs/lists.md#creating-and-running-lists).

Routes:

* ``GET /admin/lists?domain=``: the lists with their member and held-post counts;
* ``GET /admin/list?address=&page=``: one list's settings form, its members (50 a page) with
  forms to add and remove them, and its held posts with approve and reject buttons;
* ``POST /admin/lists/add``: a new list (address, owners, name, group), with the checks of
  ``ourmail list create`` (:func:`ourmail.lists.edit.create`);
* ``POST /admin/list/settings``, ``/admin/list/members/add``, ``/admin/list/members/delete``,
  ``/admin/list/held/approve``, ``/admin/list/held/reject``;
* ``POST /admin/list/delete``: removes the list, its members and pending confirmations when
  the form's "yes, delete" box is ticked (:func:`ourmail.lists.edit.delete`); its archive
  stays in the store.

Rights as for groups: a domain admin sees and changes the lists of their domains only, and
names no address of another local domain in them (members, owners, moderators, posters,
group; 403, logged, nothing changed).  Changes are made in a worker thread with their audit line
(:func:`~ourmail.manage.audit.audited_in_thread`), mark the lists changed for the other
processes, reload the running table, and redirect (303) to a page that confirms them.
Approving and rejecting go through the moderation part (``ourmail.lists.moderation``), each
with its audit line (``ok``, ``refused: gone`` or ``failed: <error>``, none decided while the
log cannot be written); a failure shows an error page that says so.  The members are read a
page at a time (``LIMIT``/``OFFSET``), and the codes shown (delivery, held reasons) are
translated.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import NotFound

from ourmail.addresses import AddressError, normalise_address
from ourmail.interfaces import AccountRefused, Actor, IAuditLog
from ourmail.lists import edit
from ourmail.lists.context import ListContext
from ourmail.lists.model import ListSettings, Member
from ourmail.lists.service import ListService
from ourmail.manage.audit import audited_in_thread
from ourmail.web.adminpages import MAX_ADDRESS, AdminAccess, AdminPages, NotAdmin, no_control

log = Logger()

#: Members shown per page.
MEMBERS_PAGE = 50
#: Most addresses added in one form.
MAX_FORM_MEMBERS = 100
MAX_MEMBER_TEXT = MAX_FORM_MEMBERS * (MAX_ADDRESS + 2)
#: Longest value read for one setting (the footer is the longest).
MAX_SETTING_TEXT = 1000 * (MAX_ADDRESS + 2)
#: A held post's id, as the moderation part makes them.
HELD_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
#: What ``?done=`` may confirm on these pages.
LIST_DONE = ("created", "settings", "members-added", "member-removed", "approved", "rejected")
#: What ``?done=`` may confirm on the lists' page.
LISTS_DONE = ("list-deleted",)
#: Longest list name read from the form.
MAX_NAME_TEXT = 4 * edit.MAX_LINE
#: The settings whose form field is a checkbox.
CHECKBOXES = tuple(k for k in edit.FIELDS if isinstance(getattr(ListSettings("x@y"), k), bool))


def _query(**fields: str | int) -> bytes:
    return urlencode(fields).encode("ascii")


class AdminListsPages(AdminPages):
    """Mailing lists in the admin console (see the module docstring)."""

    app = AdminPages.app

    @property
    def list_service(self) -> ListService:
        """The lists; a server without them answers these pages 404."""
        lists = self.services.lists
        if lists is None:
            raise NotFound()
        return lists

    @property
    def list_ctx(self) -> ListContext:
        return self.list_service.ctx

    @property
    def audit_log(self) -> IAuditLog:
        audit = self.services.audit
        if audit is None:
            raise NotFound()
        return audit

    def list_text(self, request: IRequest, refused: AccountRefused) -> str:
        """What a refused list change says, in the request's language."""
        _ = self.gettext(request)
        if refused.code == "no-such-list":
            return _("There is no list %(address)s.") % {"address": refused.subject}
        if refused.code == "bad-setting":
            return _("The setting %(setting)s cannot take that value.") % {
                "setting": refused.subject
            }
        if refused.code == "list-clash":
            return _("The list %(address)s answers at one of this list's addresses already.") % {
                "address": refused.subject
            }
        if refused.code == "too-many":
            return _("Too many addresses.")
        if refused.code == "no-targets":
            return _("Give at least one address.")
        return self.refusal_text(request, refused)

    def status_texts(self, request: IRequest) -> Callable[[str], str]:
        """The words the list's page shows for a member's delivery, why it was disabled and
        why a post is held, in the request's language (an unknown code as it is)."""
        _ = self.gettext(request)
        texts = {
            "each": _("each post"),
            "digest": _("digest"),
            "none": _("none"),
            "bounces": _("disabled by bounces"),
            "member": _("disabled by the member"),
            "owner": _("disabled by an owner"),
            "non-member": _("not a member"),
            "size": _("too large"),
        }
        return lambda code: texts.get(code, code)

    async def list_field(self, request: IRequest, access: AdminAccess, action: str) -> ListSettings:
        """The list the form names, in a domain ``access`` manages."""
        raw = self.form(request, "address", MAX_ADDRESS)
        if not raw or not no_control(raw):
            raise AccountRefused("bad-address", "not an address", "")
        try:
            address = normalise_address(raw)
        except AddressError:
            raise AccountRefused("bad-address", "not an address", raw) from None
        if not access.manages(address.rpartition("@")[2]):
            raise NotAdmin(action, address)
        ctx = self.list_ctx
        lst = await ctx.run(ctx.db.get, address)
        if lst is None:
            raise AccountRefused("no-such-list", "no such list", address)
        return lst

    async def addresses_managed(
        self, access: AdminAccess, addresses: Sequence[str], action: str
    ) -> None:
        """A domain admin's list may name users of their domains or addresses elsewhere as
        members, owners, moderators, posters or group, never another local domain (as their
        groups and aliases may not: :class:`NotAdmin`, 403, logged)."""
        if not access.full and addresses:
            await self.targets_managed(access, addresses, action)

    def list_addresses(self, request: IRequest, name: str) -> list[str]:
        """A form's addresses, one per line (or separated by commas or spaces), normalised."""
        text = self.form(request, name, MAX_MEMBER_TEXT)
        if text is None and (request.args or {}).get(name.encode()):
            raise AccountRefused("too-many", "the list is too long")
        found = [t for t in re.split(r"[\s,;]+", text or "") if t]
        if len(found) > MAX_FORM_MEMBERS:
            raise AccountRefused("too-many", "too many")
        if not found:
            raise AccountRefused("no-targets", "no address")
        try:
            return list(dict.fromkeys(normalise_address(a) for a in found))
        except AddressError:
            raise AccountRefused("bad-target", "not an address") from None

    async def lists_changed(self) -> None:
        """Tell the other processes (the change mark) and this one (its table)."""
        await self.list_ctx.changed()
        await self.list_service.reload()

    # -- the lists ---------------------------------------------------------------------------

    @app.route("/admin/lists", methods=["GET"])
    async def admin_lists(self, request: IRequest, code: int = 200, **context: Any) -> bytes:
        domain = self.domain_field(request)
        access = self.admin(request, "lists.view", domain or None)
        ctx = self.list_ctx

        def rows() -> list[tuple[ListSettings, int, int]]:
            shown = []
            for lst in ctx.db.lists():
                if access.manages(lst.domain) and (not domain or lst.domain == domain):
                    shown.append((lst, ctx.db.count(lst.address), len(ctx.db.held(lst.address))))
            return shown

        return self.render_admin(
            request,
            access,
            "admin_lists.html",
            code,
            domain=domain,
            domains=await self.managed_domains(access),
            lists=await ctx.run(rows),
            confirmed=self.form(request, "done", 20) in LISTS_DONE,
            deleted=self.form(request, "who", MAX_ADDRESS) or "",
            **context,
        )

    @app.route("/admin/lists/add", methods=["POST"])
    async def admin_lists_add(self, request: IRequest) -> bytes:
        access = self.admin(request, "list.create")
        self.checked(request)
        ctx, actor = self.list_ctx, self.actor(request, access)
        typed = {
            "typed": self.form(request, "address", MAX_ADDRESS) or "",
            "typed_owners": self.form(request, "owners", MAX_MEMBER_TEXT) or "",
            "typed_name": self.form(request, "name", MAX_NAME_TEXT) or "",
            "typed_group": self.form(request, "group", MAX_ADDRESS) or "",
        }
        try:
            try:
                address, given, used = await self.new_list_fields(request, access)
            except AccountRefused as e:
                # Refused before the change began: its audit line, as the command line's.
                await self.record(actor, "list.create", typed["typed"], f"refused: {e.code}")
                raise

            def work() -> str:
                edit.create(ctx.db, address, given, _normalise, used.__contains__, ctx.clock())
                return address

            detail = f"owners: {given['owners'].replace(',', ', ')}"
            await audited_in_thread(self.audit_log, actor, "list.create", address, work, detail)
        except AccountRefused as e:
            error = self.list_text(request, e)
            return await self.admin_lists(request, 400, add_error=error, **typed)
        await self.lists_changed()
        return self.redirect(request, b"/admin/list?" + _query(address=address, done="created"))

    async def new_list_fields(
        self, request: IRequest, access: AdminAccess
    ) -> tuple[str, dict[str, str], set[str]]:
        """The new list's address (in a served domain ``access`` manages), its settings as
        text, and which of its addresses are a user, alias or group already."""
        address = await self.address_field(request)
        if not access.manages(address.rpartition("@")[2]):
            raise NotAdmin("list.create", address)
        owners = self.list_addresses(request, "owners")
        group = (self.form(request, "group", MAX_ADDRESS) or "").strip()
        named = [*owners, group] if group else owners
        await self.addresses_managed(access, named, "list.create")
        name = self.form(request, "name", MAX_NAME_TEXT)
        if name is None and (request.args or {}).get(b"name"):
            raise AccountRefused("bad-setting", "name: too long", "name")
        used = set(await self.accounts.in_use(edit.addresses_of(address)))
        return address, {"owners": ",".join(owners), "name": name or "", "group": group}, used

    async def record(self, actor: Actor, action: str, target: str, result: str) -> None:
        """An audit line written outside :func:`audited_in_thread` (logged if it cannot be)."""
        try:
            await deferToThread(self.audit_log.record, actor, action, target[:MAX_ADDRESS], result)
        except OSError:
            log.failure("list {target}: the audit log cannot be written", target=target)

    @app.route("/admin/list", methods=["GET"])
    async def admin_list(self, request: IRequest, code: int = 200, **context: Any) -> bytes:
        access = self.admin(request, "list.view")
        try:
            lst = await self.list_field(request, access, "list.view")
        except AccountRefused as e:
            return self.error(request, 404, self.list_text(request, e))
        ctx, page = self.list_ctx, self.page_number(request)
        count = await ctx.run(ctx.db.count, lst.address)
        pages = max(1, -(-count // MEMBERS_PAGE))
        page = min(page, pages)
        offset = (page - 1) * MEMBERS_PAGE
        members = await ctx.run(ctx.db.members_page, lst.address, offset, MEMBERS_PAGE)
        done = self.form(request, "done", 20)
        return self.render_admin(
            request,
            access,
            "admin_list.html",
            code,
            lst=lst,
            settings={key: edit.value_of(lst, key) for key in edit.FIELDS},
            checkboxes=CHECKBOXES,
            members=members,
            member_count=count,
            status_text=self.status_texts(request),
            page=page,
            pages=pages,
            held=await ctx.run(ctx.db.held, lst.address),
            confirmed=done if done in LIST_DONE else None,
            **context,
        )

    # -- changes -----------------------------------------------------------------------------

    @app.route("/admin/list/settings", methods=["POST"])
    async def admin_list_settings(self, request: IRequest) -> bytes:
        access = self.admin(request, "list.set")
        self.checked(request)
        ctx = self.list_ctx
        try:
            lst = await self.list_field(request, access, "list.set")
            changes = {}
            for key in edit.FIELDS:
                if key in CHECKBOXES:
                    changes[key] = "true" if self.form(request, key, 10) == "on" else "false"
                    continue
                value = self.form(request, key, MAX_SETTING_TEXT)
                if value is not None:
                    changes[key] = value.replace("\n", ",") if key in edit.ADDRESS_FIELDS else value
            named = [changes.get("group", "")] + [
                a for key in edit.ADDRESS_FIELDS for a in changes.get(key, "").split(",")
            ]
            await self.addresses_managed(
                access, [a.strip() for a in named if a.strip()], "list.set"
            )

            def work() -> str:
                current = ctx.db.get(lst.address)
                if current is None:
                    raise AccountRefused("no-such-list", "no such list", lst.address)
                try:
                    changed = edit.change(current, changes, _normalise)
                except edit.BadSetting as e:
                    raise AccountRefused("bad-setting", str(e), e.key) from None
                ctx.db.update(changed)
                return lst.address

            actor = self.actor(request, access)
            detail = ", ".join(sorted(changes))
            await audited_in_thread(self.audit_log, actor, "list.set", lst.address, work, detail)
        except AccountRefused as e:
            if e.code in ("bad-address", "no-such-list"):
                return self.error(request, 400, self.list_text(request, e))
            return await self.admin_list(request, 400, error=self.list_text(request, e))
        await self.lists_changed()
        done = _query(address=lst.address, done="settings")
        return self.redirect(request, b"/admin/list?" + done)

    @app.route("/admin/list/delete", methods=["POST"])
    async def admin_list_delete(self, request: IRequest) -> bytes:
        access = self.admin(request, "list.delete")
        self.checked(request)
        ctx, actor = self.list_ctx, self.actor(request, access)
        _ = self.gettext(request)
        try:
            lst = await self.list_field(request, access, "list.delete")
        except AccountRefused as e:
            return self.error(request, 400, self.list_text(request, e))
        if self.form(request, "confirm", 10) != "yes":
            await self.record(actor, "list.delete", lst.address, "refused: not-confirmed")
            text = _("Tick the box to confirm that the list is to be deleted; nothing was done.")
            return await self.admin_list(request, 400, delete_error=text)

        def work() -> str:
            edit.delete(ctx.db, lst.address)
            return lst.address

        try:
            await audited_in_thread(self.audit_log, actor, "list.delete", lst.address, work)
        except AccountRefused as e:
            return self.error(request, 400, self.list_text(request, e))
        await self.lists_changed()
        done = _query(done="list-deleted", who=lst.address)
        return self.redirect(request, b"/admin/lists?" + done)

    async def _members(self, request: IRequest, action: str, field: str) -> bytes:
        access = self.admin(request, action)
        self.checked(request)
        ctx = self.list_ctx
        try:
            lst = await self.list_field(request, access, action)
            addresses = self.list_addresses(request, field)
            if action == "list.member-add":
                await self.addresses_managed(access, addresses, action)

            def work() -> str:
                if action == "list.member-add":
                    now = ctx.clock()
                    ctx.db.subscribe(lst.address, [Member(a, subscribed=now) for a in addresses])
                else:
                    ctx.db.unsubscribe(lst.address, addresses)
                return lst.address

            actor = self.actor(request, access)
            detail = ", ".join(addresses)
            await audited_in_thread(self.audit_log, actor, action, lst.address, work, detail)
        except AccountRefused as e:
            if e.code in ("bad-address", "no-such-list"):
                return self.error(request, 400, self.list_text(request, e))
            return await self.admin_list(request, 400, error=self.list_text(request, e))
        done = "members-added" if action == "list.member-add" else "member-removed"
        return self.redirect(request, b"/admin/list?" + _query(address=lst.address, done=done))

    @app.route("/admin/list/members/add", methods=["POST"])
    async def admin_list_members_add(self, request: IRequest) -> bytes:
        return await self._members(request, "list.member-add", "members")

    @app.route("/admin/list/members/delete", methods=["POST"])
    async def admin_list_members_delete(self, request: IRequest) -> bytes:
        return await self._members(request, "list.member-remove", "member")

    async def _moderate(self, request: IRequest, verdict: str) -> bytes:
        action = f"list.held-{verdict}"
        access = self.admin(request, action)
        self.checked(request)
        _ = self.gettext(request)
        try:
            lst = await self.list_field(request, access, action)
        except AccountRefused as e:
            return self.error(request, 400, self.list_text(request, e))
        held_id = self.form(request, "held", 100) or ""
        if not HELD_ID.fullmatch(held_id):
            return self.error(request, 400, _("No such held post."))
        actor, target = self.actor(request, access), f"{lst.address} {held_id}"
        try:  # as audited_in_thread does: nothing is decided while the log cannot be written
            await deferToThread(self.audit_log.ready)
        except OSError:
            log.failure("list {target}: audit log not writable", target=target)
            return self.error(request, 503, _("The audit log cannot be written; nothing was done."))
        reason = self.form(request, "reason", 1000) or ""
        try:
            done = await self._decide(lst, held_id, verdict, access.session.address, reason)
        except Exception as e:
            log.failure("list {target}: {action} failed", target=target, action=action)
            detail = f"failed: {type(e).__name__}"
            await deferToThread(self.audit_log.record, actor, action, target, detail)
            text = _("The post could not be approved; the error has been logged.")
            if verdict != "approve":
                text = _("The post could not be rejected; the error has been logged.")
            return self.error(request, 500, text)
        result = "ok" if done else "refused: gone"
        await deferToThread(self.audit_log.record, actor, action, target, result)
        if not done:
            return await self.admin_list(request, 400, error=_("That post is no longer held."))
        confirmed = "approved" if verdict == "approve" else "rejected"
        return self.redirect(request, b"/admin/list?" + _query(address=lst.address, done=confirmed))

    async def _decide(
        self, lst: ListSettings, held_id: str, verdict: str, by: str, reason: str
    ) -> bool:
        """Approve or reject a held post through the moderation part; whether it was held."""
        moderation: Any = importlib.import_module("ourmail.lists.moderation")
        if verdict == "approve":
            return bool(await moderation.approve(self.list_ctx, lst, held_id, by))
        return bool(await moderation.reject(self.list_ctx, lst, held_id, by, reason))

    @app.route("/admin/list/held/approve", methods=["POST"])
    async def admin_list_held_approve(self, request: IRequest) -> bytes:
        return await self._moderate(request, "approve")

    @app.route("/admin/list/held/reject", methods=["POST"])
    async def admin_list_held_reject(self, request: IRequest) -> bytes:
        return await self._moderate(request, "reject")


def _normalise(raw: str) -> str:
    try:
        return normalise_address(raw)
    except AddressError as e:
        raise ValueError(str(e)) from None
