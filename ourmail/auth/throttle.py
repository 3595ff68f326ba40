"""Delays for failed logins, per client address, so password guessing is slow.

Each failure from a client doubles the delay added to its next failed reply (base, 2x, 4x …, up to
``max_delay``); failures are forgotten after ``window`` seconds without one, and a success
forgets them at once.  Only replies to failures are delayed, so a real user is never slowed by an
attacker elsewhere.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


class FailureThrottle:
    def __init__(
        self,
        clock: IReactorTime,
        base_delay: float = 0.5,
        max_delay: float = 15.0,
        window: float = 900.0,
    ) -> None:
        self.clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.window = window
        self._failures: dict[str, tuple[int, float]] = {}

    def failed(self, client: str) -> float:
        """Record a failure from ``client``; return the seconds to wait before replying."""
        now = self.clock.seconds()
        count, last = self._failures.get(client, (0, now))
        if now - last > self.window:
            count = 0
        count += 1
        self._failures[client] = (count, now)
        if len(self._failures) > 100_000:
            self._expire(now)
        return min(self.base_delay * 2 ** (count - 1), self.max_delay)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _expire(self, now: float) -> None:
        for key, (_, last) in list(self._failures.items()):
            if now - last > self.window:
                del self._failures[key]
