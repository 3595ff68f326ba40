"""The credentials checker for local accounts (strcred name ``ourmail``), and the one checker
the portal gets when there are several."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.accounts import AccountDB
from ourmail.auth.cache import IStampedChecker
from ourmail.auth.passwords import verify_in_thread
from ourmail.config import ConfigError
from ourmail.interfaces import AccountDisabled, DirectoryUnavailable, UnknownUser

log = Logger()


@implementer(IStampedChecker)
class AccountChecker:
    """Checks a login name and password against ``accounts.json``; the avatar id is the address.

    A login without ``@`` is taken to be in ``default_domain``; a checker made without one (the
    ``--auth=ourmail:DATA`` plugin) is given the server's primary domain by
    :func:`password_checker`.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, accounts: AccountDB, default_domain: str | None = None) -> None:
        self.accounts = accounts
        self.default_domain = default_domain

    def _address(self, name: bytes | str) -> str | None:
        try:
            text = name.decode("utf-8") if isinstance(name, bytes) else name
            return normalise_address(text, self.default_domain)
        except (UnicodeDecodeError, AddressError):
            return None

    def credential_stamp(self, username: bytes | str) -> Hashable:
        """The stored hash and whether the account is disabled: ``ourmail user passwd``,
        ``user del``, ``user disable`` and ``user enable`` change it."""
        address = self._address(username)
        return self.accounts.login_state(address) if address else None

    @inlineCallbacks
    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred[str]:
        address = self._address(creds.username)
        try:
            password = creds.password
            if isinstance(password, bytes):
                password = password.decode("utf-8")
        except UnicodeDecodeError:
            address, password = None, ""
        encoded = self.accounts.password_hash(address) if address else None
        ok = yield verify_in_thread(encoded, password)
        if encoded is None:
            raise UnknownUser()
        if not ok or address is None:
            raise error.UnauthorizedLogin()
        if self.accounts.disabled(address) is not None:
            # Checked after the password, so a disabled account answers as slowly as any.
            raise AccountDisabled()
        return address


@implementer(IStampedChecker)
class FirstOf:
    """Several checkers for user names and passwords (a twisted.cred portal takes one per kind
    of credentials), asked in turn: the first that accepts wins, and one that refuses
    (UnauthorizedLogin) passes the login on to the next.  If none accepts and one could not be
    asked (:class:`~ourmail.interfaces.DirectoryUnavailable`, or any other error, which is
    logged), the login fails temporarily: the password may well be right."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, *checkers: ICredentialsChecker) -> None:
        self.checkers = checkers

    def credential_stamp(self, username: bytes | str) -> Hashable:
        """The stamps of those checkers that have them."""
        return tuple(
            c.credential_stamp(username) if IStampedChecker.providedBy(c) else None
            for c in self.checkers
        )

    @inlineCallbacks
    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred[object]:
        unavailable: DirectoryUnavailable | None = None
        known = False  # a checker knew the name (so the password was wrong)
        disabled = False  # a checker knew the name and password, of a disabled account
        for checker in self.checkers:
            try:
                return (yield checker.requestAvatarId(creds))
            except UnknownUser:
                continue
            except AccountDisabled:
                disabled = True
                continue
            except error.UnauthorizedLogin:
                known = True
                continue
            except DirectoryUnavailable as e:
                unavailable = e
            except Exception as e:
                log.failure("checker {checker!r} failed", checker=checker)
                unavailable = DirectoryUnavailable(f"{type(checker).__name__} failed: {e}")
        if unavailable is not None:
            raise unavailable
        if disabled:
            raise AccountDisabled()
        raise error.UnauthorizedLogin() if known else UnknownUser()


def password_checker(
    checkers: Sequence[ICredentialsChecker], primary_domain: str
) -> ICredentialsChecker:
    """The portal's one checker for user names and passwords: ``checkers`` (such as several
    ``--auth`` options) in turn.  Every protocol logs in with a name and password, so a checker
    that cannot check them is a configuration error."""
    chain = []
    for checker in checkers:
        if credentials.IUsernamePassword not in checker.credentialInterfaces:
            raise ConfigError(f"the checker {checker!r} cannot check user names and passwords")
        if isinstance(checker, AccountChecker) and checker.default_domain is None:
            checker = AccountChecker(checker.accounts, primary_domain)
        chain.append(checker)
    return chain[0] if len(chain) == 1 else FirstOf(*chain)
