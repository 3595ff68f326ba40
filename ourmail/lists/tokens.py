"""Confirmation tokens and one-click unsubscribe signatures.

A confirmation (subscribe, unsubscribe, approve a held post…) is a random token of 128 bits
sent to the one who must confirm; only its SHA-256 is stored (``ListDB.add_token``), it
expires (``[lists] confirm_hours``) and works once.  A confirmation is acted on before its
token is used up (:func:`use`): a crash or a failure in between leaves the token pending,
and the action, which must be idempotent, is run again by the next confirmation.  A
one-click unsubscribe link (RFC 8058) must keep working for as long as the member gets
posts, so it is stateless: an HMAC-SHA256 of the list and the member's address under the
server's list secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock

from ourmail.lists.context import ListContext
from ourmail.lists.listdb import Token

R = TypeVar("R")

#: The confirmations under way, by token hash: one at a time per token.
_using: dict[str, DeferredLock] = {}

#: Characters of a token as it appears in addresses and URLs (base32, lower-case: safe in a
#: local part and a path, and survives case-folding MTAs).
TOKEN_LENGTH = 26


def _digest(token: str) -> str:
    return hashlib.sha256(token.lower().encode("ascii", "replace")).hexdigest()


def new_token() -> str:
    """A fresh random token (128 bits)."""
    return secrets.token_bytes(16).hex()[:TOKEN_LENGTH]


def issue(
    ctx: ListContext, list_address: str, address: str, action: str, data: str = ""
) -> Deferred[str]:
    """Store a pending confirmation of ``action`` for ``address``; fires with the token (to
    send, never to log)."""
    token = new_token()
    now = ctx.clock()
    expires = now + ctx.settings.confirm_hours * 3600
    record = Token(list_address, address, action, data, now, expires)
    return ctx.run(ctx.db.add_token, _digest(token), record).addCallback(lambda _: token)


def redeem(ctx: ListContext, token: str) -> Deferred[Token | None]:
    """The pending confirmation ``token`` stands for, used up; None when it is unknown,
    expired or already used."""
    if not _well_formed(token):
        return defer.succeed(None)
    return ctx.run(ctx.db.take_token, _digest(token), ctx.clock())


async def use(
    ctx: ListContext, token: str, act: Callable[[Token], Awaitable[R | None]]
) -> tuple[Token, R] | None:
    """Act on the pending confirmation ``token``: ``act(pending)`` runs first, and only once
    it has succeeded is the token used up, so a failure or a crash in between leaves it
    pending and nothing is lost (``act`` must therefore be idempotent: run again after a
    crash, it does no harm).  ``act`` answering None leaves the token pending too (it was
    not this caller's to decide, say another list's).  Confirmations of one token run one
    at a time, so two at once act once: the second finds it used.  The token and what
    ``act`` answered; None when the token is unknown, expired or used, or ``act`` declined."""
    if not _well_formed(token):
        return None
    digest = _digest(token)
    lock = _using.setdefault(digest, DeferredLock())
    await lock.acquire()
    try:
        pending = await ctx.run(ctx.db.peek_token, digest, ctx.clock())
        if pending is None:
            return None
        result = await act(pending)
        if result is None:
            return None
        await ctx.run(ctx.db.take_token, digest, ctx.clock())
        return pending, result
    finally:
        lock.release()
        if not lock.locked and not lock.waiting:
            _using.pop(digest, None)


def peek(ctx: ListContext, token: str) -> Deferred[Token | None]:
    """The pending confirmation ``token`` stands for, left in place (a page that asks first)."""
    if not _well_formed(token):
        return defer.succeed(None)
    return ctx.run(ctx.db.peek_token, _digest(token), ctx.clock())


def _well_formed(token: str) -> bool:
    return len(token) == TOKEN_LENGTH and all(c in "0123456789abcdef" for c in token.lower())


def member_signature(secret: bytes, list_address: str, address: str) -> str:
    """The one-click unsubscribe signature of ``address`` on ``list_address``."""
    message = f"{list_address.lower()}\0{address.lower()}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def valid_signature(secret: bytes, list_address: str, address: str, signature: str) -> bool:
    """Whether ``signature`` is ``address``'s on ``list_address`` (constant time)."""
    return hmac.compare_digest(member_signature(secret, list_address, address), signature)
