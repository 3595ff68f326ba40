"""One login path for every protocol: the portal, plus throttling and logging of failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.cred import credentials, error
from twisted.cred.portal import Portal
from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ourmail.auth.throttle import CLIENT_LOCKED, FailureThrottle
from ourmail.interfaces import DirectoryUnavailable, IUserStore, UnknownUser
from ourmail.logs import events
from ourmail.net.metrics import Metrics

log = Logger()


class LoginFailed(Exception):
    """Wrong user name or password (deliberately not saying which)."""


class LoginUnavailable(Exception):
    """The password could not be checked now (a directory server is down): try again later.
    Protocols answer with their temporary error, never as a wrong password."""


@attrs.define
class Session:
    """A login: the avatar (an IUserStore) and the realm's logout, which :meth:`end` calls
    once, when the protocol session ends (however it ends)."""

    avatar: Any
    _logout: Callable[[], None] | None

    def end(self) -> None:
        """Tell the realm the session is over; later calls do nothing."""
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()


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
            try:
                _iface, avatar, logout = yield self.portal.login(creds, None, IUserStore)
            except UnknownUser:
                result = events.UNKNOWN_USER
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
                return Session(avatar, logout)
        delay, started = self.throttle.failed(client, account)
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
