"""Server-side web sessions: random ids, idle and absolute expiry, a bounded table.

The browser holds only a random 256-bit id (the cookie); the login (its avatar and the realm's
logout) stays here, so ending a session on the server makes a stolen cookie worthless.
"""

from __future__ import annotations

import collections
import hmac
import secrets
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime

from ourmail.auth.login import Session as Login

#: 32 random bytes: a 256-bit session id (OWASP's minimum is 64 bits of entropy).
ID_BYTES = 32


@attrs.define
class WebSession:
    """One logged-in browser."""

    id: str
    login: Login
    #: Sent back with every state-changing request (a hidden form field).
    csrf: str
    created: float
    last_used: float

    @property
    def address(self) -> str:
        """The user's address (the avatar's)."""
        return str(self.login.avatar.address)


def new_token() -> str:
    """A random 256-bit token, URL- and cookie-safe."""
    return secrets.token_urlsafe(ID_BYTES)


def same_token(given: str | None, expected: str) -> bool:
    """Compare tokens in constant time; a missing one never matches."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class SessionStore:
    """The sessions of one server process, in memory.

    A session ends after ``idle`` seconds without a request, ``absolute`` seconds after the
    login, or at logout; the realm's logout is then called.  At most ``max_sessions`` are kept:
    beyond that, the least recently used session ends.
    """

    def __init__(
        self,
        clock: IReactorTime,
        idle: float = 30 * 60,
        absolute: float = 12 * 3600,
        max_sessions: int = 10_000,
    ) -> None:
        self.clock = clock
        self.idle = idle
        self.absolute = absolute
        self.max_sessions = max_sessions
        # Least recently used first.
        self._sessions: collections.OrderedDict[str, WebSession] = collections.OrderedDict()
        #: Called with each session that ends (logout, expiry, eviction), after the realm's
        #: logout: parts drop what they keep for it (compose's uploads).
        self.on_end: list[Callable[[WebSession], object]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, login: Login) -> WebSession:
        """A new session for a successful login (always a new id: no session fixation)."""
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            self.end(next(iter(self._sessions.values())))
        now = self.clock.seconds()
        session = WebSession(new_token(), login, new_token(), now, now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> WebSession | None:
        """The live session with this id (its idle time starts again), or None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock.seconds()
        if self._expired(session, now):
            self.end(session)
            return None
        session.last_used = now
        self._sessions.move_to_end(session_id)
        return session

    def peek(self, session_id: str | None) -> WebSession | None:
        """The live session with this id, without counting this as activity (a background
        request such as the live-update stream), or None."""
        session = self._sessions.get(session_id) if session_id else None
        return session if session is not None and self.alive(session) else None

    def alive(self, session: WebSession) -> bool:
        """Whether ``session`` is still live, without counting this as activity (an open
        tab's background requests must not keep it from expiring)."""
        if self._sessions.get(session.id) is not session:
            return False
        if self._expired(session, self.clock.seconds()):
            self.end(session)
            return False
        return True

    def end(self, session: WebSession) -> None:
        """End a session on the server (logout, expiry); later calls do nothing."""
        if self._sessions.pop(session.id, None) is not None:
            session.login.end()
            for ended in self.on_end:
                ended(session)

    def end_others(self, keep: WebSession) -> int:
        """End every other session of ``keep``'s user (after a password change); how many."""
        others = [
            s for s in self._sessions.values() if s.address == keep.address and s.id != keep.id
        ]
        for session in others:
            self.end(session)
        return len(others)

    def end_user(self, address: str) -> int:
        """End every session of ``address`` (an admin reset their password or deleted the
        account); how many."""
        ended = [s for s in self._sessions.values() if s.address == address]
        for session in ended:
            self.end(session)
        return len(ended)

    def sweep(self) -> None:
        """End every session that is over (the realm hears of it without waiting for the
        browser to come back)."""
        now = self.clock.seconds()
        for session in [s for s in self._sessions.values() if self._expired(s, now)]:
            self.end(session)

    def end_all(self) -> None:
        """End every session (the server stops)."""
        for session in list(self._sessions.values()):
            self.end(session)

    def _expired(self, session: WebSession, now: float) -> bool:
        return now - session.last_used >= self.idle or now - session.created >= self.absolute

    def _expire(self) -> None:
        """End the sessions at the front of the table (the least recently used) that are over;
        any other expired session ends when it is next asked for."""
        now = self.clock.seconds()
        while self._sessions:
            first = next(iter(self._sessions.values()))
            if not self._expired(first, now):
                break
            self.end(first)


class SessionSweeper(TimerService):
    """Sweeps ``sessions`` every ``interval`` seconds; ends them all when the server stops."""

    def __init__(self, sessions: SessionStore, interval: float = 60) -> None:
        super().__init__(interval, sessions.sweep)
        self.sessions = sessions

    def stopService(self) -> Any:
        self.sessions.end_all()
        return super().stopService()
