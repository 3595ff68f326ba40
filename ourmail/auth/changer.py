"""Password changes of local accounts (:class:`~ourmail.interfaces.IPasswordChanger`), for the
webmail's settings page: hashed and stored exactly as ``ourmail user passwd`` does.

The login cache (``ourmail/auth/cache.py``) keys each remembered login with the account's
stored hash, so the new hash makes every remembered login with the old password a miss.
"""

from __future__ import annotations

from collections.abc import Hashable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB, AccountError
from ourmail.auth.passwords import hash_password
from ourmail.interfaces import IPasswordChanger


@implementer(IPasswordChanger)
class AccountPasswords:
    """:class:`IPasswordChanger` over ``accounts.json``."""

    def __init__(self, accounts: AccountDB) -> None:
        self.accounts = accounts

    def manages(self, user: str) -> bool:
        return self.accounts.has_user(user)

    def change(self, user: str, password: str) -> Deferred[Hashable]:
        def store() -> Hashable:
            # argon2id costs tens of milliseconds; the update locks and fsyncs: in a thread.
            encoded = hash_password(password)
            try:
                self.accounts.set_password(user, encoded)
            except AccountError as e:
                raise ValueError(str(e)) from e
            # AccountChecker.credential_stamp of the enabled account with this hash.
            return (encoded, False)

        return deferToThread(store)
