"""One directory user's page in the admin console
(docs/admin-console.md#users-from-an-ldap-directory):

* ``GET /admin/directory/user?address=``: what the LDAP directory says of a user (name, main
  and extra addresses, groups, the quota it sets, whether it is disabled) and what they store
  here, read-only: changes to them happen in the directory.

``/admin/user?address=`` sends a directory user here.  The rights are the console's: a domain
admin sees only their domains' users, never an admin's entry (403, logged), and of a user's
groups only those with an address in their domains (another domain's group is not theirs to
know of, nor a group known only by its name).
"""

from __future__ import annotations

import math

import attrs
from twisted.web.iweb import IRequest

from ourmail.interfaces import AccountRefused, DirectoryUnavailable
from ourmail.web.adminpages import AdminPages
from ourmail.web.directorylisting import unavailable_text


class AdminDirectoryPages(AdminPages):
    """The directory user's page (see the module docstring)."""

    app = AdminPages.app

    @app.route("/admin/directory/user", methods=["GET"])
    async def admin_directory_user(self, request: IRequest) -> bytes:
        access = self.admin(request, "user.view")
        _ = self.gettext(request)
        users = self.services.directory_users
        try:
            address = await self.address_field(request)
        except AccountRefused as e:
            return self.error(request, 400, self.refusal_text(request, e))
        self.for_account(access, address, "user.view")
        try:
            person = None if users is None else await users.person(address)
        except DirectoryUnavailable:
            return self.error(request, 503, unavailable_text(self, request))
        if person is None:
            missing = _("There is no user %(address)s.") % {"address": address}
            return self.error(request, 404, missing)
        if not access.full:
            ours = tuple(g for g in person.groups if "@" in g and access.manages(_domain(g)))
            person = attrs.evolve(person, groups=ours)
        return self.render_admin(
            request,
            access,
            "admin_directory_user.html",
            person=person,
            quota_mib=None if person.quota is None else math.ceil(person.quota / 1024 / 1024),
            used_mib=math.ceil(person.used.bytes / 1024 / 1024),
        )


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()
