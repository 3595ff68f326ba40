"""One login path for every protocol: the portal, plus throttling and logging of failures."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from twisted.cred import credentials, error
from twisted.cred.portal import Portal
from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ourmail.auth.throttle import CLIENT_LOCKED, FailureThrottle
from ourmail.interfaces import AccountDisabled, DirectoryUnavailable, IUserStore, UnknownUser
from ourmail.logs import events
from ourmail.net.metrics import Metrics

if TYPE_CHECKING:
    from ourmail.auth.revocation import SessionRevoker

log = Logger()
T = TypeVar("T")


class LoginFailed(Exception):
    """Wrong user name or password (deliberately not saying which)."""


class LoginUnavailable(Exception):
    """The password could not be checked now (a directory server is down): try again later.
    Protocols answer with their temporary error, never as a wrong password."""


@attrs.define(eq=False)
class Session:
    """A login: the avatar (an IUserStore) and the realm's logout, which :meth:`end` calls
    once, when the protocol session ends (however it ends).

    The :class:`~ourmail.auth.revocation.SessionRevoker` watches it: when the account's
    password is changed, or the account disabled or deleted, it calls :meth:`revoke`, which
    calls what the protocol gave :meth:`when_revoked` (and then :meth:`end`)."""

    avatar: Any
    _logout: Callable[[], None] | None
    #: The login name, its credential stamp at login and the protocol (set by the revoker).
    username: str = ""
    stamp: Hashable = None
    protocol: str = ""
    #: Changes of this login's own password under way (:meth:`keep_through`): not revoked.
    keeping: int = 0
    #: After this login's own change, given the stamp the change produced (None: the change
    #: failed): keeps or revokes the session by the account's stamp then (set by the revoker).
    settle: Callable[[Hashable], Deferred[None]] | None = None
    _forget: Callable[[], object] | None = None
    _on_revoke: Callable[[], None] | None = None

    def end(self) -> None:
        """Tell the realm the session is over; later calls do nothing."""
        forget, self._forget = self._forget, None
        if forget is not None:
            forget()
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()

    def watched(
        self, username: str, stamp: Hashable, protocol: str, forget: Callable[[], object]
    ) -> None:
        """Record what the revoker compares; ``forget`` unregisters the session at its end."""
        self.username, self.stamp, self.protocol, self._forget = username, stamp, protocol, forget

    def when_revoked(self, call: Callable[[], None]) -> None:
        """Have ``call`` end the protocol's session (tell the client, close) if the account
        changes under it; without one, a revoked session only ends at the realm."""
        self._on_revoke = call

    def revoke(self) -> None:
        """End the session because its account changed (the revoker calls it)."""
        call, self._on_revoke = self._on_revoke, None
        try:
            if call is not None:
                call()
        finally:
            self.end()

    def keep_through(
        self, change: Deferred[T], stamp_of: Callable[[T], Hashable] | None = None
    ) -> Deferred[T]:
        """``change`` (this login's own password change, firing with the credential stamp it
        gave the account, or with a result ``stamp_of`` finds it in) without being revoked by
        it.  Once it succeeded, the session goes on only if the account is just as the change
        left it; if anything else changed it meanwhile (an admin disabled or deleted it, or
        set another password), or the change failed and the account changed anyway, the
        session is revoked."""
        self.keeping += 1

        def settle(outcome: T | Failure) -> Deferred[T | Failure]:
            produced: Hashable = None
            if not isinstance(outcome, Failure):
                produced = stamp_of(outcome) if stamp_of is not None else outcome
            settled = self.settle(produced) if self.settle is not None else succeed(None)
            return settled.addBoth(lambda _: outcome)

        def kept(outcome: T | Failure) -> T | Failure:
            self.keeping -= 1
            return outcome

        return change.addBoth(settle).addBoth(kept)  # type: ignore[arg-type]


class Authenticator:
    """Logs users in through a portal; failed attempts are answered late (see FailureThrottle)."""

    def __init__(
        self,
        portal: Portal,
        throttle: FailureThrottle,
        clock: IReactorTime,
        metrics: Metrics | None = None,
    ) -> None:
        self.portal = portal
        self.throttle = throttle
        self.clock = clock
        #: Counts logins and failures by protocol (docs/metrics.md).
        self.metrics = metrics or Metrics()
        #: Ends open sessions when their account changes (set by service.py; None: never).
        self.revoker: SessionRevoker | None = None

    @inlineCallbacks
    def login(
        self,
        username: str,
        password: str,
        client: str,
        protocol: str,
        mechanism: str = "password",
    ) -> Deferred[Any]:
        """Fires with a :class:`Session` whose avatar is the user's IUserStore, or fails with
        LoginFailed after a delay (LoginUnavailable when the password could not be checked).

        A locked-out client or account fails without its password being checked.  Every
        attempt is one ``login`` event (:func:`ourmail.logs.events.login`, with
        ``mechanism``, e.g. ``PLAIN``); the password is never logged, the user name is.
        """
        account = username.strip().lower()[:320]
        refused = self.throttle.refused(client, account)
        # A locked-out client is guessing itself; a locked-out account says nothing of this
        # client (docs/logging.md#fail2ban).
        result = events.THROTTLED if refused == CLIENT_LOCKED else events.ACCOUNT_LOCKED
        if refused is None:
            creds = credentials.UsernamePassword(username.encode("utf-8"), password.encode("utf-8"))
            # Taken before the check: a change during it revokes the session at once.
            stamp = self.revoker.stamp(username) if self.revoker is not None else None
            try:
                _iface, avatar, logout = yield self.portal.login(creds, None, IUserStore)
            except UnknownUser:
                result = events.UNKNOWN_USER
            except AccountDisabled:
                result = events.ACCOUNT_DISABLED
                log.info(
                    "{protocol} login for {user!r} from {client} refused: the account is disabled",
                    protocol=protocol,
                    user=username[:200],
                    client=client,
                )
            except (error.UnauthorizedLogin, error.UnhandledCredentials):
                result = events.BAD_PASSWORD
            except DirectoryUnavailable as e:
                events.login(protocol, client, username, mechanism, events.UNAVAILABLE)
                log.warn(
                    "{protocol} login for {user!r} from {client} not checked: {why}",
                    protocol=protocol,
                    user=username[:200],
                    client=client,
                    why=str(e),
                )
                raise LoginUnavailable() from e
            except Exception as e:  # a plugin checker's or realm's own error: not a refusal
                events.login(protocol, client, username, mechanism, events.UNAVAILABLE)
                log.failure(
                    "{protocol} login for {user!r} from {client}: the checker or realm failed",
                    protocol=protocol,
                    user=username[:200],
                    client=client,
                )
                raise LoginUnavailable() from e
            else:
                self.throttle.succeeded(client, account)
                self.metrics.login(protocol, True)
                events.login(protocol, client, username, mechanism, events.OK)
                session = Session(avatar, logout)
                if self.revoker is not None:
                    self.revoker.register(session, username, stamp, protocol)
                return session
        # A disabled account's right password is no guess: counted against the account only.
        delay, started = self.throttle.failed(
            client, account, against_client=result != events.ACCOUNT_DISABLED
        )
        self.metrics.login(protocol, False)
        events.login(protocol, client, username, mechanism, result)
        if started:
            log.warn(
                "{what} locked out after repeated failed logins: {user!r} from {client}",
                what="client" if started == "client" else "account",
                user=username[:200],
                client=client,
            )
        yield task.deferLater(self.clock, delay, lambda: None)
        raise LoginFailed()
