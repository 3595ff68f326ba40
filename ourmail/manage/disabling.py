"""Disabling and enabling local accounts for the admin console
(:class:`~ourmail.interfaces.IAccountDisabling`): the code of ``ourmail user disable`` and
``enable`` (:mod:`ourmail.manage.accountops`), in a worker thread, audit-logged before the
Deferred fires.  The running server's :class:`~ourmail.auth.revocation.SessionRevoker` sees the
accounts file change and ends the account's open sessions."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.config import Settings
from ourmail.interfaces import Actor, DisabledState, IAccountDisabling, IAuditLog
from ourmail.manage import accountops as ops
from ourmail.manage.audit import audited_in_thread


@implementer(IAccountDisabling)
class AccountDisabling:
    """:class:`IAccountDisabling` over ``<data>/accounts.json``."""

    def __init__(self, settings: Settings, audit: IAuditLog) -> None:
        self.settings = settings
        self.audit = audit
        # Used in worker threads only (the reactor's readers have their own AccountDB).
        self.db = AccountDB(settings.data_dir)

    def state(self, address: str) -> Deferred[DisabledState | None]:
        def read() -> DisabledState | None:
            found = ops.existing_user(self.settings, self.db, address)
            state = self.db.disabled(found)
            if state is None:
                return None
            return DisabledState(str(state.get("since", "")), str(state.get("reason", "")))

        return deferToThread(read)

    def disabled_among(self, addresses: Sequence[str]) -> Deferred[frozenset[str]]:
        def read() -> frozenset[str]:
            return frozenset(a for a in addresses if self.db.disabled(a) is not None)

        return deferToThread(read)

    def disable(self, actor: Actor, address: str, reason: str) -> Deferred[None]:
        def change() -> str:
            return ops.disable_user(self.settings, self.db, address, reason)

        d = audited_in_thread(self.audit, actor, "user.disable", address, change, reason)
        return d.addCallback(lambda _: None)

    def enable(self, actor: Actor, address: str) -> Deferred[None]:
        def change() -> str:
            return ops.enable_user(self.settings, self.db, address)

        d = audited_in_thread(self.audit, actor, "user.enable", address, change)
        return d.addCallback(lambda _: None)
