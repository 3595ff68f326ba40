"""A list context for the requests tests: a real list database, a queue that keeps what the
list sends, and a clock the test moves."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred

from ourmail.config import ListsSettings
from ourmail.lists.context import ListContext
from ourmail.lists.listdb import ListDB
from ourmail.lists.model import ListSettings

LIST = "team@example.test"
OWNER = "boss@example.test"
SECRET = b"k" * 32


class SentBox:
    """An outbound queue that keeps each message: (sender, recipients, parsed message)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], EmailMessage]] = []
        #: Refuse every message (a full disk).
        self.failing = False

    def enqueue(self, sender: str, recipients: Any, content: bytes, *args: Any, **kw: Any) -> Any:
        if self.failing:
            return defer.fail(OSError("no space left on device"))
        assert b"\r\n" in content and b"\n" not in content.replace(b"\r\n", b"")
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.sent.append((sender, [r for r, _ in recipients], msg))
        return defer.succeed("q1")

    def to(self, address: str) -> list[EmailMessage]:
        return [m for _, rcpts, m in self.sent if address in rcpts]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class SyncContext(ListContext):
    """The database in the test's own thread: every Deferred has fired on return."""

    def run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return defer.maybeDeferred(f, *args)


def context(
    tmp_path: Path, threads: bool = False, **settings: Any
) -> tuple[ListContext, SentBox, Clock]:
    """A context with the list ``team@example.test`` (owner ``boss@``) created; the
    database in threads (as the server runs it) or in the caller's."""
    box, clock = SentBox(), Clock()
    db = ListDB(tmp_path / "lists.sqlite")
    ctx = (ListContext if threads else SyncContext)(
        db=db,
        root=tmp_path,
        directory=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        queue=box,  # type: ignore[arg-type]
        settings=ListsSettings(**settings),
        hostname="mail.example.test",
        web_url="https://mail.example.test",
        secret=SECRET,
        clock=clock,
    )
    db.create(ListSettings(LIST, name="Team", owners=(OWNER,)), clock())
    return ctx, box, clock


def run(awaited: Any) -> Any:
    """The result of a coroutine or Deferred that fires at once (a synchronous context)."""
    result: list[Any] = []
    d = awaited if isinstance(awaited, Deferred) else Deferred.fromCoroutine(awaited)
    d.addBoth(result.append)
    assert result, "the coroutine waits"
    if isinstance(result[0], Exception) or hasattr(result[0], "raiseException"):
        result[0].raiseException()
    return result[0]


def token_of(msg: EmailMessage) -> str:
    """The token of a confirmation request: from its Reply-To, checked against its URL."""
    m = re.fullmatch(r"team-confirm\+([0-9a-f]+)@example\.test", str(msg["Reply-To"]))
    assert m, msg["Reply-To"]
    body = msg.get_content()
    assert f"https://mail.example.test/lists/confirm/{m.group(1)}" in body
    return m.group(1)
