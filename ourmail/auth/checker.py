"""The credentials checker for local accounts (strcred name ``ourmail``)."""

from __future__ import annotations

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, inlineCallbacks
from zope.interface import implementer

from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import verify_in_thread
from ourmail.interfaces import DirectoryUnavailable


@implementer(ICredentialsChecker)
class AccountChecker:
    """Checks a login name and password against ``accounts.json``; the avatar id is the address.

    A login without ``@`` is taken to be in ``default_domain``.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, accounts: AccountDB, default_domain: str | None = None) -> None:
        self.accounts = accounts
        self.default_domain = default_domain

    @inlineCallbacks
    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred[str]:
        try:
            name = creds.username
            password = creds.password
            if isinstance(name, bytes):
                name = name.decode("utf-8")
            if isinstance(password, bytes):
                password = password.decode("utf-8")
            address = normalise_address(name, self.default_domain)
        except (UnicodeDecodeError, AddressError):
            address, password = None, ""
        encoded = self.accounts.password_hash(address) if address else None
        ok = yield verify_in_thread(encoded, password)
        if not ok or address is None:
            raise error.UnauthorizedLogin()
        return address


@implementer(ICredentialsChecker)
class FirstOf:
    """Several checkers for one kind of credentials (a twisted.cred portal takes only one):
    the first that accepts wins.  If none accepts and one could not be asked
    (:class:`~ourmail.interfaces.DirectoryUnavailable`), the login fails temporarily."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, *checkers: ICredentialsChecker) -> None:
        self.checkers = checkers

    @inlineCallbacks
    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred[object]:
        unavailable: DirectoryUnavailable | None = None
        for checker in self.checkers:
            try:
                return (yield checker.requestAvatarId(creds))
            except error.UnauthorizedLogin:
                continue
            except DirectoryUnavailable as e:
                unavailable = e
        if unavailable is not None:
            raise unavailable
        raise error.UnauthorizedLogin()
