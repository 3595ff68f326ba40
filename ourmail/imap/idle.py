"""IMAP IDLE (RFC 2177): changes pushed as they happen, polled from other processes each second."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import task

from ourmail.imap.states import AUTHED
from ourmail.imap.wire import (
    ParseError,
    Token,
)

IDLE_POLL = 1.0  # seconds between checks for changes made by other processes during IDLE


class IdleCommand:
    """IDLE (a mixin of :class:`~ourmail.imap.server.IMAPServer`)."""

    def do_IDLE(self, args: list[Token]) -> None:
        """RFC 2177: report changes as they happen until the client sends DONE."""
        if args:
            raise ParseError("IDLE takes no arguments")
        self.send("+ idling")
        tag = self._tag
        if self.selected is not None:
            folder = self.selected.folder
            folder.add_listener(self._idle_wake)
            self._idle_poll = task.LoopingCall(self._idle_push)
            self._idle_poll.clock = self.ctx.clock
            self._idle_poll.start(IDLE_POLL, now=False)

        def done(line: bytes) -> None:
            self._stop_idle()
            self._tag, self._cmd = tag, "IDLE"
            if line.strip().upper() == b"DONE":
                self.tagged("OK", "IDLE terminated")
            else:
                self.bad("Expected DONE")

        self._continuation = done

    def _idle_wake(self) -> None:
        """A folder listener: push the news soon, after the change in progress has finished."""
        if not self._idle_scheduled:
            self._idle_scheduled = True
            self.ctx.clock.callLater(0, self._idle_push)

    def _idle_push(self) -> None:
        self._idle_scheduled = False
        if self.selection_revoked():
            return  # a shared folder the user may no longer read tells nothing more
        if self.selected is not None and not self.closing:
            for line in self.selected.updates(expunge_ok=True):
                self.send(line)

    def _stop_idle(self) -> None:
        if self._idle_poll is not None:
            if self._idle_poll.running:
                self._idle_poll.stop()
            self._idle_poll = None
            if self.selected is not None:
                self.selected.folder.remove_listener(self._idle_wake)

    COMMANDS: dict[str, tuple[Callable[..., Any], frozenset[str]]] = {
        "IDLE": (do_IDLE, AUTHED),
    }
