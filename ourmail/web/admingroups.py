"""The admin console's local groups and users' forwarding (issue 17 point 4,
docs/admin-console.md#groups).

Routes:

* ``GET /admin/groups?domain=``: groups with their member counts, a form to create one;
  ``POST /admin/groups/add``, ``/admin/groups/delete``;
* ``GET /admin/group?address=``: one group's members, forms to add and remove them
  (``POST /admin/group/members/add``, ``/admin/group/members/delete``);
* ``POST /admin/user/forward``: a user's forwarding, from a form on ``/admin/user``.

Rights as for aliases (:class:`~ourmail.web.adminpages.AdminPages`): a domain admin manages
the groups of their domains only, may not make a group at an admin's address, and may add as
members, or forward to, users of their domains or addresses in domains not served here, never
an address of another local domain (403, logged, nothing changed).  Changes go through
:class:`~ourmail.interfaces.IRoutingAdmin` (the code of the ``ourmail group`` and ``ourmail
user forward`` commands, audit-logged) and redirect (303) to a page that confirms them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from twisted.web.iweb import IRequest
from werkzeug.exceptions import NotFound

from ourmail.addresses import AddressError, normalise_address
from ourmail.interfaces import AccountRefused, ExpansionTooLarge, IRoutingAdmin
from ourmail.web.adminpages import MAX_ADDRESS, AdminAccess, AdminPages, NotAdmin, no_control

#: Most members added in one form, and the longest list read.
MAX_FORM_MEMBERS = 100
MAX_MEMBER_TEXT = MAX_FORM_MEMBERS * (MAX_ADDRESS + 2)
#: Most forwarding addresses read from the form (the commands allow 10).
MAX_FORM_FORWARDS = 10
#: Longest group name read from a form.
MAX_NAME_TEXT = 400
#: What ``?done=`` may confirm on these pages.
GROUP_DONE = ("group-added", "group-deleted", "members-added", "member-removed", "forward")


class AdminGroupsPages(AdminPages):
    """Groups and forwarding in the admin console (see the module docstring)."""

    app = AdminPages.app

    @property
    def routing(self) -> IRoutingAdmin:
        """The groups and forwarding; a server without them answers these pages 404."""
        routing = self.services.routing
        if routing is None:
            raise NotFound()
        return routing

    def confirmed(self, request: IRequest) -> str | None:
        """The confirmation a redirect after a change asked for, if one of ours."""
        done = self.form(request, "done", 20)
        return done if done in GROUP_DONE else None

    def group_text(self, request: IRequest, refused: AccountRefused) -> str:
        """What an :class:`AccountRefused` of a group or forwarding change says."""
        _ = self.gettext(request)
        subject = refused.subject
        texts: dict[str, Callable[[], str]] = {
            "no-such-group": lambda: _("There is no group %(address)s.") % {"address": subject},
            "no-such-member": lambda: (
                _("That address is no member of %(address)s.") % {"address": subject}
            ),
            "bad-name": lambda: _("A group's name is one line of at most 200 characters."),
            "too-many": lambda: _("Too many addresses."),
            "too-large": lambda: _("Mail there would reach more than 1,000 addresses: refused."),
            "self-forward": lambda: _("A user cannot forward their mail to themselves."),
            "forward-loop": lambda: (
                _("Mail forwarded there would come back to %(address)s: refused.")
                % {"address": subject}
            ),
            "no-targets": lambda: _("Give at least one address."),
            "not-local-user": lambda: (
                _("%(address)s is no user, group or alias here.") % {"address": subject}
            ),
        }
        text = texts.get(refused.code)
        return text() if text else self.refusal_text(request, refused)

    def address_list(self, request: IRequest, name: str, most: int) -> list[str]:
        """A form's addresses, one per line (or separated by commas or spaces)."""
        text = self.form(request, name, MAX_MEMBER_TEXT)
        if text is None and (request.args or {}).get(name.encode()):
            raise AccountRefused("too-many", "the list is too long")
        found = [t for t in re.split(r"[\s,;]+", text or "") if t]
        if len(found) > most or not all(no_control(t) and len(t) <= MAX_ADDRESS for t in found):
            raise AccountRefused("too-many" if len(found) > most else "bad-target", "bad list")
        return found

    async def members_managed(
        self, access: AdminAccess, members: Sequence[str], action: str
    ) -> None:
        """A domain admin's group or forward may reach users of their domains or addresses
        elsewhere, never another local domain (nor learn who exists there)."""
        if access.full:
            return
        domains = await self.accounts.domains()
        served, primary = set(domains), domains[0]
        for raw in members:
            try:
                domain = normalise_address(raw, primary).rpartition("@")[2]
            except AddressError:
                raise AccountRefused("bad-target", "not an address") from None
            if domain in served and not access.manages(domain):
                raise NotAdmin(action, raw)

    async def group_field(self, request: IRequest, access: AdminAccess, action: str) -> str:
        """The group's address from the form, in a domain ``access`` manages."""
        address = await self.address_field(request)
        if not access.manages(address.rpartition("@")[2]):
            raise NotAdmin(action, address)
        return address

    # -- groups ------------------------------------------------------------------------------

    @app.route("/admin/groups", methods=["GET"])
    async def admin_groups(self, request: IRequest, code: int = 200, **context: Any) -> bytes:
        domain = self.domain_field(request)
        access = self.admin(request, "groups.view", domain or None)
        domains = [domain] if domain else access.domains
        return self.render_admin(
            request,
            access,
            "admin_groups.html",
            code,
            domain=domain,
            domains=await self.managed_domains(access),
            groups=await self.routing.groups(domains),
            confirmed=self.confirmed(request),
            **context,
        )

    @app.route("/admin/groups/add", methods=["POST"])
    async def admin_add_group(self, request: IRequest) -> bytes:
        access = self.admin(request, "group.add")
        self.checked(request)
        typed = {
            "typed": self.form(request, "address", MAX_ADDRESS) or "",
            "typed_name": self.form(request, "name", MAX_NAME_TEXT) or "",
            "typed_members": self.form(request, "members", MAX_MEMBER_TEXT) or "",
        }
        try:
            address = await self.group_field(request, access, "group.add")
            self.for_account(access, address, "group.add")
            name = self.form(request, "name", MAX_NAME_TEXT)
            if name is None and (request.args or {}).get(b"name"):
                raise AccountRefused("bad-name", "too long")
            members = self.address_list(request, "members", MAX_FORM_MEMBERS)
            await self.members_managed(access, members, "group.add")
            directory = self.services.directory
            try:
                found = None if directory is None else await directory.lookup(address)
            except ExpansionTooLarge:  # a group or alias there already, a big one
                raise AccountRefused("exists", "taken", address) from None
            if found is not None and found.kind != "unknown" and not found.catch_all:
                # An LDAP user, group or list; an address only a catch-all takes is free.
                raise AccountRefused("exists", "taken", address)
            actor = self.actor(request, access)
            added = await self.routing.add_group(actor, address, name or "", members)
        except AccountRefused as e:
            return await self.admin_groups(
                request, 400, add_error=self.group_text(request, e), **typed
            )
        return self.redirect(request, b"/admin/groups?" + _query(done="group-added", who=added))

    @app.route("/admin/groups/delete", methods=["POST"])
    async def admin_delete_group(self, request: IRequest) -> bytes:
        access = self.admin(request, "group.del")
        self.checked(request)
        try:
            address = await self.group_field(request, access, "group.del")
            await self.routing.delete_group(self.actor(request, access), address)
        except AccountRefused as e:
            return self.error(request, 400, self.group_text(request, e))
        return self.redirect(request, b"/admin/groups?" + _query(done="group-deleted", who=address))

    @app.route("/admin/group", methods=["GET"])
    async def admin_group(self, request: IRequest, code: int = 200, **context: Any) -> bytes:
        access = self.admin(request, "group.view")
        try:
            address = await self.group_field(request, access, "group.view")
            found = [g for g in await self.routing.groups([address.rpartition("@")[2]])]
            group = next((g for g in found if g.address == address), None)
            if group is None:
                raise AccountRefused("no-such-group", "no such group", address)
        except AccountRefused as e:
            return self.error(request, 404, self.group_text(request, e))
        return self.render_admin(
            request,
            access,
            "admin_group.html",
            code,
            group=group,
            confirmed=self.confirmed(request),
            **context,
        )

    async def _members_change(self, request: IRequest, action: str, field: str) -> bytes:
        access = self.admin(request, action)
        self.checked(request)
        try:
            address = await self.group_field(request, access, action)
            members = self.address_list(request, field, MAX_FORM_MEMBERS)
            if not members:
                raise AccountRefused("no-targets", "no address")
            actor = self.actor(request, access)
            if action == "group.member-add":
                await self.members_managed(access, members, action)
                await self.routing.add_members(actor, address, members)
            else:
                await self.routing.remove_members(actor, address, members)
        except AccountRefused as e:
            error = self.group_text(request, e)
            if e.code in ("bad-address", "not-served", "no-such-group"):
                return self.error(request, 400, error)
            return await self.admin_group(request, 400, error=error)
        done = "members-added" if action == "group.member-add" else "member-removed"
        return self.redirect(request, b"/admin/group?" + _query(address=address, done=done))

    @app.route("/admin/group/members/add", methods=["POST"])
    async def admin_group_members_add(self, request: IRequest) -> bytes:
        return await self._members_change(request, "group.member-add", "members")

    @app.route("/admin/group/members/delete", methods=["POST"])
    async def admin_group_members_delete(self, request: IRequest) -> bytes:
        return await self._members_change(request, "group.member-del", "member")

    # -- forwarding (a form on /admin/user) --------------------------------------------------

    async def user_panels(self, request: IRequest, address: str) -> dict[str, Any]:
        """The user page's forwarding form: where the user's mail goes now."""
        panels = await super().user_panels(request, address)
        routing = self.services.routing
        if routing is None:
            return panels
        try:
            forwarding = await routing.forwarding(address)
        except AccountRefused:  # deleted since the page's first look: no form
            return panels
        return {
            **panels,
            "forwarding": forwarding,
            "forward_done": self.confirmed(request) == "forward",
        }

    @app.route("/admin/user/forward", methods=["POST"])
    async def admin_user_forward(self, request: IRequest) -> bytes:
        access = self.admin(request, "user.forward")
        self.checked(request)
        try:
            address = await self.address_field(request)
            self.for_account(access, address, "user.forward")
            off = self.form(request, "off", 10) == "on"
            keep = self.form(request, "keep", 10) == "on"
            targets = None if off else self.address_list(request, "targets", MAX_FORM_FORWARDS)
            targets = targets or None  # an emptied list stops forwarding too
            if targets is not None:
                await self.members_managed(access, targets, "user.forward")
            await self.routing.set_forwarding(self.actor(request, access), address, targets, keep)
        except AccountRefused as e:
            error = self.group_text(request, e)
            if e.code in ("bad-address", "no-such-user", "not-served"):
                return self.error(request, 400, error)
            return await self.admin_user(request, 400, forward_error=error)
        return self.redirect(request, b"/admin/user?" + _query(address=address, done="forward"))


def _query(**fields: str) -> bytes:
    return urlencode(fields).encode("ascii")
