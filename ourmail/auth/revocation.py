"""Ending open sessions when their account changes: a password set, the account disabled or
deleted (docs/admin-console.md#ending-open-sessions).

Every login made through the :class:`~ourmail.auth.login.Authenticator` is registered here with
the *credential stamp* its checker gave before the password was checked (for local accounts
the stored hash and the disabled flag: :class:`~ourmail.auth.cache.IStampedChecker`).  The
change may come from this process (the admin console) or from another (the ``ourmail``
commands), so nothing is sent between them: once a second a worker thread ``stat``\\s the
accounts file (and reads it again if it changed, off the reactor), and only when the file
changed are the open sessions' stamps compared with their account's current one (read in a
worker thread too).  Every
``full_check`` seconds they are compared anyway, for checkers that keep accounts elsewhere.
A session whose stamp differs is *revoked*: its protocol ends it the way it ends any session
(IMAP ``* BYE``, SMTP ``421``, POP3 a closed connection, the web's session ended).

Nothing runs per protocol command: an IMAP command costs what it cost before.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from twisted.application.service import Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from ourmail.auth.cache import IStampedChecker
from ourmail.auth.login import Session

log = Logger()


class SessionRevoker(Service):
    """Open sessions by login, revoked when their credential stamp changes (module docstring).

    ``probe`` is called in a worker thread once per ``interval`` seconds and returns a value
    that changes when the accounts do (the accounts file's stamp); ``full_check`` seconds
    after the last comparison the sessions are compared whatever the probe says.
    """

    def __init__(
        self,
        checker: ICredentialsChecker,
        probe: Callable[[], Hashable],
        clock: IReactorTime,
        interval: float = 1.0,
        full_check: float = 30.0,
    ) -> None:
        self.checker = checker
        self.probe = probe
        self.clock = clock
        self.interval = interval
        self.full_check = full_check
        self._sessions: dict[int, Session] = {}
        self._seen: Hashable = object()  # no probe yet: the first one compares
        self._compared = 0.0
        self._loop: task.LoopingCall | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def stamp(self, username: str) -> Hashable:
        """The checker's stamp of ``username`` now (None for a checker without stamps)."""
        if IStampedChecker.providedBy(self.checker):
            return self.checker.credential_stamp(username)
        return None

    def register(self, session: Session, username: str, stamp: Hashable, protocol: str) -> None:
        """Watch ``session`` (logged in as ``username`` with ``stamp``) until it ends."""
        if not IStampedChecker.providedBy(self.checker):
            return
        key = id(session)
        self._sessions[key] = session
        session.watched(username, stamp, protocol, lambda: self._sessions.pop(key, None))
        session.restamp = lambda: setattr(session, "stamp", self.stamp(username))

    def compare(self) -> Deferred[int]:
        """Revoke every session whose account changed; fires with how many were.

        The accounts' current stamps are read in a worker thread (a few tens of microseconds
        each: thousands of sessions would hold up the reactor), the sessions revoked on the
        reactor thread, except those that ended, or took a new stamp (their own password
        change), in the meantime."""
        self._compared = self.clock.seconds()
        watched = [(s, s.username, s.stamp) for s in self._sessions.values()]

        def current() -> dict[str, Hashable]:
            return {name: self.stamp(name) for name in {name for _, name, _ in watched}}

        def revoke(now: dict[str, Hashable]) -> int:
            revoked = 0
            for session, name, stamp in watched:
                if id(session) not in self._sessions or session.keeping or session.stamp != stamp:
                    continue
                if now[name] != stamp:
                    log.info(
                        "ending the {protocol} session of {user!r}: its password was changed "
                        "or the account disabled or deleted",
                        protocol=session.protocol,
                        user=name[:200],
                    )
                    session.revoke()
                    revoked += 1
            return revoked

        return deferToThread(current).addCallback(revoke)

    def tick(self) -> Deferred[None]:
        """Probe the accounts (in a thread), and compare the sessions if they changed."""

        def probed(seen: Hashable) -> Deferred[int] | None:
            changed, self._seen = seen != self._seen, seen
            if changed or self.clock.seconds() - self._compared >= self.full_check:
                return self.compare()
            return None

        def failed(failure: object) -> None:
            log.failure("the accounts could not be probed for changes", failure)  # type: ignore[arg-type]

        return deferToThread(self.probe).addCallback(probed).addErrback(failed)

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return None
