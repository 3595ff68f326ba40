"""The admin console's way to local groups and users' forwarding
(:class:`~ourmail.interfaces.IRoutingAdmin`): changes through :mod:`ourmail.manage.groupops`
(the code of the ``ourmail group`` and ``ourmail user forward`` commands), each in a worker
thread and audit-logged before its Deferred fires.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.interfaces import (
    Actor,
    Forwarding,
    GroupInfo,
    IAuditLog,
    IRoutingAdmin,
)
from ourmail.manage import accountops, groupops
from ourmail.manage.audit import audited_in_thread


@implementer(IRoutingAdmin)
class LocalRoutingAdmin:
    """:class:`IRoutingAdmin` over ``<data>/accounts.json``."""

    def __init__(self, settings: Settings, audit: IAuditLog) -> None:
        self.settings = settings
        self.audit = audit
        # Used in worker threads only (the reactor's readers have their own AccountDB).
        self.db = AccountDB(settings.data_dir)

    def groups(self, domains: Sequence[str] | None) -> Deferred[list[GroupInfo]]:
        def listing() -> list[GroupInfo]:
            return [
                GroupInfo(address, name, tuple(members))
                for address, (name, members) in sorted(self.db.groups().items())
                if domains is None or address.rpartition("@")[2] in domains
            ]

        return deferToThread(listing)

    def add_group(
        self, actor: Actor, address: str, name: str, members: Sequence[str]
    ) -> Deferred[str]:
        def change() -> str:
            return groupops.add_group(self.settings, self.db, address, name, members)

        return audited_in_thread(
            self.audit, actor, "group.add", address, change, ", ".join(members)
        )

    def delete_group(self, actor: Actor, address: str) -> Deferred[None]:
        def change() -> str:
            return groupops.delete_group(self.settings, self.db, address)

        return audited_in_thread(self.audit, actor, "group.del", address, change).addCallback(
            lambda _: None
        )

    def add_members(self, actor: Actor, address: str, members: Sequence[str]) -> Deferred[None]:
        def change() -> str:
            return groupops.add_members(self.settings, self.db, address, members)

        return audited_in_thread(
            self.audit, actor, "group.member-add", address, change, ", ".join(members)
        ).addCallback(lambda _: None)

    def remove_members(self, actor: Actor, address: str, members: Sequence[str]) -> Deferred[None]:
        def change() -> str:
            return groupops.remove_members(self.settings, self.db, address, members)

        return audited_in_thread(
            self.audit, actor, "group.member-del", address, change, ", ".join(members)
        ).addCallback(lambda _: None)

    def forwarding(self, address: str) -> Deferred[Forwarding]:
        def read() -> Forwarding:
            found = accountops.existing_user(self.settings, self.db, address)
            forward = self.db.forward(found)
            return Forwarding(tuple(forward[0]), forward[1]) if forward else Forwarding()

        return deferToThread(read)

    def set_forwarding(
        self, actor: Actor, address: str, targets: Sequence[str] | None, keep: bool
    ) -> Deferred[None]:
        def change() -> str:
            return groupops.set_forward(self.settings, self.db, address, targets, keep)

        detail = groupops.forward_detail(targets, keep)
        return audited_in_thread(
            self.audit, actor, "user.forward", address, change, detail
        ).addCallback(lambda _: None)
