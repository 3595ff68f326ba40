"""Confirmation tokens and one-click unsubscribe signatures.

A confirmation (subscribe, unsubscribe, approve a held post…) is a random token of 128 bits
sent to the one who must confirm; only its SHA-256 is stored (``ListDB.add_token``), it
expires (``[lists] confirm_hours``) and works once.  A one-click unsubscribe link
(RFC 8058) must keep working for as long as the member gets posts, so it is stateless: an
HMAC-SHA256 of the list and the member's address under the server's list secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from twisted.internet import defer
from twisted.internet.defer import Deferred

from ourmail.lists.context import ListContext
from ourmail.lists.listdb import Token

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
