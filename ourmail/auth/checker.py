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


class DisabledWrongPassword(error.UnauthorizedLogin):
    """A wrong password for a disabled account: answered as any wrong password, but in a
    chain (:class:`FirstOf`) no later checker's success for the name is taken."""


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
        # Checked after the password, so a disabled account answers as slowly as any.
        disabled = address is not None and self.accounts.disabled(address) is not None
        if not ok or address is None:
            raise DisabledWrongPassword() if disabled else error.UnauthorizedLogin()
        if disabled:
            raise AccountDisabled()
        return address


@implementer(IStampedChecker)
class FirstOf:
    """Several checkers for user names and passwords (a twisted.cred portal takes one per kind
    of credentials), asked in turn: the first that accepts wins, and one that refuses
    (UnauthorizedLogin) passes the login on to the next.  A name that a checker has as a
    disabled account (:class:`~ourmail.interfaces.AccountDisabled`, or
    :class:`DisabledWrongPassword`) is asked of the later checkers too, so it takes as long
    as a wrong password, but their success is refused (AccountDisabled).  If none accepts
    and one could not be asked (:class:`~ourmail.interfaces.DirectoryUnavailable`, or any
    other error, which is logged), the login fails temporarily: the password may well be
    right."""

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
        barred = False  # a checker has the name as a disabled account: no later success
        for checker in self.checkers:
            try:
                avatar_id = yield checker.requestAvatarId(creds)
            except UnknownUser:
                continue
            except AccountDisabled:
                disabled = barred = True
                continue
            except DisabledWrongPassword:
                known = barred = True
                continue
            except error.UnauthorizedLogin:
                known = True
                continue
            except DirectoryUnavailable as e:
                unavailable = e
            except Exception as e:
                log.failure("checker {checker!r} failed", checker=checker)
                unavailable = DirectoryUnavailable(f"{type(checker).__name__} failed: {e}")
            else:
                if not barred:
                    return avatar_id
                # A later checker's success (the same address in LDAP, say) would reach the
                # same mailbox: a disabled account logs in nowhere.
                disabled = True
                log.info(
                    "login of {user!r} accepted by {checker!r} refused: the account is "
                    "disabled in an earlier checker",
                    user=avatar_id,
                    checker=checker,
                )
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
