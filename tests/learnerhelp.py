"""An in-memory spam learner for unit tests (the real ones talk to spamd and rspamd)."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from ourmail.interfaces import ISpamLearner


class ScannerDown(Exception):
    """The scripted scanner refuses to be told."""


@implementer(ISpamLearner)
@attrs.define
class MemoryLearner:
    """Records what it is taught; ``down`` makes it fail, ``hang`` never answer."""

    taught: list[tuple[str, bytes, bool]] = attrs.Factory(list)
    down: bool = False
    hang: bool = False
    calls: int = 0

    def learn(self, user: str, message: bytes, spam: bool) -> Deferred[None]:
        self.calls += 1
        if self.hang:
            return Deferred()
        if self.down:
            return fail(ScannerDown("scanner down"))
        self.taught.append((user, message, spam))
        return succeed(None)
