"""The admin console's way to the local accounts (:class:`~ourmail.interfaces.IAccountAdmin`):
listings from :class:`~ourmail.manage.userindex.UserIndex`, changes through
:mod:`ourmail.manage.accountops` (the code of the ``ourmail user`` and ``ourmail alias``
commands), each in a worker thread and audit-logged before its Deferred fires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.config import QuotaLimit, Settings
from ourmail.interfaces import (
    Actor,
    IAccountAdmin,
    IAuditLog,
    IMailStore,
    IQuotaPolicy,
    UserPage,
    UserQuota,
)
from ourmail.manage import accountops as ops
from ourmail.manage.audit import audited_in_thread
from ourmail.manage.userindex import UserIndex


@implementer(IAccountAdmin)
class LocalAccountAdmin:
    """:class:`IAccountAdmin` over ``<data>/accounts.json`` and the mail store."""

    def __init__(
        self,
        settings: Settings,
        store: IMailStore,
        quota: IQuotaPolicy,
        audit: IAuditLog,
        directory_limit: Callable[[str], QuotaLimit | None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.quota_policy = quota
        self.audit = audit
        self.directory_limit = directory_limit
        # Used in worker threads only (the reactor's readers have their own AccountDB).
        self.db = AccountDB(settings.data_dir)
        self.index = UserIndex(settings.data_dir)

    # -- reading ---------------------------------------------------------------------------

    def min_password(self) -> int:
        return ops.MIN_PASSWORD

    def domains(self) -> Deferred[list[str]]:
        return deferToThread(ops.served_domains, self.settings, self.db)

    def address(self, text: str) -> Deferred[str]:
        return deferToThread(ops.address, self.settings, self.db, text)

    def in_use(self, addresses: Sequence[str]) -> Deferred[list[str]]:
        def used() -> list[str]:
            return [a for a in addresses if ops.in_use(self.db, a)]

        return deferToThread(used)

    def count(self, domains: Sequence[str] | None) -> Deferred[tuple[int, int]]:
        def count() -> tuple[int, int]:
            snapshot = self.index.current()
            aliases = [a for a in snapshot.aliases if _in(a, domains)]
            return len(snapshot.users_in(domains)), len(aliases)

        return deferToThread(count)

    def users(
        self, domains: Sequence[str] | None, text: str, offset: int, limit: int
    ) -> Deferred[UserPage]:
        def page() -> UserPage:
            shown, total = self.index.current().page(domains, text.lower(), offset, limit)
            return UserPage(tuple(shown), total, offset)

        return deferToThread(page)

    def aliases(self, domains: Sequence[str] | None) -> Deferred[list[tuple[str, tuple[str, ...]]]]:
        def listing() -> list[tuple[str, tuple[str, ...]]]:
            return [(a, t) for a, t in self.index.current().aliases.items() if _in(a, domains)]

        return deferToThread(listing)

    def quota(self, address: str) -> Deferred[UserQuota]:
        def limit() -> tuple[str, QuotaLimit, bool]:
            found = ops.existing_user(self.settings, self.db, address)
            return (found, *ops.quota_limit(self.settings, self.db, found, self.directory_limit))

        def with_usage(known: tuple[str, QuotaLimit, bool]) -> UserQuota:
            found, applies, own = known
            # What IMAP GETQUOTA reports: the folders' journals, as the store keeps them.
            return UserQuota(applies, own, self.quota_policy.usage(self.store.user(found)))

        return deferToThread(limit).addCallback(with_usage)

    # -- changes -----------------------------------------------------------------------------

    def add_user(self, actor: Actor, address: str, password: str) -> Deferred[str]:
        def change() -> str:
            return ops.add_user(self.settings, self.db, address, password)

        return audited_in_thread(self.audit, actor, "user.add", address, change)

    def set_password(self, actor: Actor, address: str, password: str) -> Deferred[None]:
        def change() -> str:
            return ops.set_password(self.settings, self.db, address, password)

        return audited_in_thread(self.audit, actor, "user.passwd", address, change).addCallback(
            lambda _: None
        )

    def delete_user(self, actor: Actor, address: str) -> Deferred[None]:
        left: list[str] = []

        def change() -> str:
            found, _, groups = ops.delete_user(self.settings, self.db, address)
            left.extend(groups)
            return found

        return audited_in_thread(
            self.audit, actor, "user.del", address, change, lambda: ops.left_groups_detail(left)
        ).addCallback(lambda _: None)

    def set_quota(self, actor: Actor, address: str, limit: QuotaLimit | None) -> Deferred[None]:
        detail = ops.quota_detail(limit)

        def change() -> str:
            return ops.set_quota(self.settings, self.db, address, limit)

        return audited_in_thread(
            self.audit, actor, "user.quota", address, change, detail
        ).addCallback(lambda _: None)

    def set_alias(self, actor: Actor, address: str, targets: Sequence[str]) -> Deferred[str]:
        def change() -> str:
            return ops.set_alias(self.settings, self.db, address, targets)[0]

        return audited_in_thread(
            self.audit, actor, "alias.add", address, change, ", ".join(targets)
        )

    def delete_alias(self, actor: Actor, address: str) -> Deferred[None]:
        def change() -> str:
            return ops.delete_alias(self.settings, self.db, address)

        return audited_in_thread(self.audit, actor, "alias.del", address, change).addCallback(
            lambda _: None
        )


def _in(address: str, domains: Sequence[str] | None) -> bool:
    return domains is None or address.rpartition("@")[2] in domains
