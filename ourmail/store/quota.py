"""Storage quota: which limit applies to a user, and whether a message still fits.

The limit is the user's own (``ourmail user quota``, kept in ``accounts.json``), else the
directory's (LDAP ``mailQuota``, learnt at login and lookup), else their domain's
(``[quota.domain."<name>"]``), else the default (``[quota]``).  Usage is the sum over the
user's folders, kept up to date by each folder's journal, so a check costs no file reads.
A delivery is refused only when the user is already over the limit or the message (by its
declared size) would take them over; like Dovecot's grace, one message of unknown size may
overrun the limit, so no message is ever cut or lost once accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from zope.interface import implementer

from ourmail.config import QuotaLimit, QuotaSettings
from ourmail.interfaces import IQuotaPolicy, IUserStore, Usage


class OwnLimits(Protocol):
    """Where users' own limits are kept (``ourmail.auth.accounts.AccountDB``); the store
    asks it by address and knows nothing else of accounts."""

    def quota(self, address: str) -> QuotaLimit | None:
        """The user's own limit, or None when they have none."""


@implementer(IQuotaPolicy)
class QuotaPolicy:
    """Limits from the accounts file, the directory and the settings (see the module text)."""

    def __init__(
        self,
        settings: QuotaSettings,
        accounts: OwnLimits,
        directory_limit: Callable[[str], QuotaLimit | None] | None = None,
    ) -> None:
        self.settings = settings
        self.accounts = accounts
        #: A user's limit from the directory (LDAP ``mailQuota``), between their own and the
        #: domain's.
        self.directory_limit = directory_limit

    @property
    def permanent(self) -> bool:
        return self.settings.permanent

    def limit(self, address: str) -> QuotaLimit:
        own = self.accounts.quota(address)
        if own is not None:
            return own
        if self.directory_limit is not None:
            from_directory = self.directory_limit(address)
            if from_directory is not None:
                return from_directory
        domain = address.rpartition("@")[2]
        return self.settings.domains.get(domain, self.settings.default)

    def usage(self, user: IUserStore) -> Usage:
        return usage(user)

    def fits(self, user: IUserStore, extra_bytes: int = 0, extra_messages: int = 1) -> bool:
        """True if ``user`` may store ``extra_messages`` more messages of ``extra_bytes`` total."""
        limit = self.limit(user.address)
        if limit.bytes is None and limit.messages is None:
            return True
        used = usage(user)
        if limit.bytes is not None and used.bytes + extra_bytes > limit.bytes:
            return False
        return limit.messages is None or used.messages + extra_messages <= limit.messages


def usage(user: IUserStore) -> Usage:
    """Bytes and messages over all of a user's folders."""
    total = count = 0
    for name in user.list_folders():
        folder = user.folder(name)
        folder.sync()
        total += folder.total_size
        count += len(folder.uids())
    return Usage(total, count)
