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
from twisted.python.failure import Failure

from ourmail.auth.cache import IStampedChecker
from ourmail.auth.login import Session

log = Logger()


def _follows(old: Hashable, now: Hashable, produced: Hashable) -> bool:
    """Whether the stamp ``now`` is ``old`` with one change's ``produced`` stamp in place: the
    whole stamp, or in a chain's (:class:`~ourmail.auth.checker.FirstOf`) tuple of stamps the
    parts that changed, every other part as it was."""
    if now == produced:
        return True
    if isinstance(old, tuple) and isinstance(now, tuple) and len(old) == len(now) and old != now:
        return all(n == o or _follows(o, n, produced) for o, n in zip(old, now, strict=True))
    return False


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
        #: The last probe's error (type and text), logged once until it changes or clears.
        self._probe_error: tuple[type, str] | None = None

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
        session.settle = lambda produced: self.settle(session, produced)

    def settle(self, session: Session, produced: Hashable) -> Deferred[None]:
        """After the session's own password change: keep it with the account's current stamp
        if that is its login stamp with the change's ``produced`` stamp in place (nothing else
        changed the account meanwhile), else revoke it if the account changed at all
        (``produced`` None: the change failed).  The stamp is read in a worker thread."""

        def settled(now: Hashable) -> None:
            if id(session) not in self._sessions:
                return  # ended meanwhile
            if produced is not None and _follows(session.stamp, now, produced):
                session.stamp = now
            elif now != session.stamp:
                self._revoke(session)

        return deferToThread(self.stamp, session.username).addCallback(settled)

    def _revoke(self, session: Session) -> bool:
        """Revoke ``session``; an error of its protocol's callback is logged, not raised, so
        one broken session does not keep the others of a round open."""
        log.info(
            "ending the {protocol} session of {user!r}: its password was changed "
            "or the account disabled or deleted",
            protocol=session.protocol,
            user=session.username[:200],
        )
        try:
            session.revoke()
        except Exception:
            log.failure(
                "ending the {protocol} session of {user!r} failed",
                protocol=session.protocol,
                user=session.username[:200],
            )
            return False
        return True

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
                    revoked += self._revoke(session)
            return revoked

        return deferToThread(current).addCallback(revoke)

    def tick(self) -> Deferred[None]:
        """Probe the accounts (in a thread), and compare the sessions if they changed."""

        def probed(seen: Hashable) -> Deferred[int] | None:
            self._probe_error = None
            changed, self._seen = seen != self._seen, seen
            if changed or self.clock.seconds() - self._compared >= self.full_check:
                return self.compare()
            return None

        def failed(failure: Failure) -> None:
            # Once a second: an unreadable file is logged once per distinct error, not each time.
            error = (type(failure.value), str(failure.value))
            if error != self._probe_error:
                self._probe_error = error
                log.failure("the accounts could not be probed for changes", failure)

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
