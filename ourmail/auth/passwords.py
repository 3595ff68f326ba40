"""Password hashing with argon2id (RFC 9106) through argon2-cffi.

Hashing and verification cost tens of milliseconds of CPU on purpose: callers on the reactor
thread go through :func:`verify_in_thread`.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the account does not exist, so a missing user costs the same time as a
    wrong password and logins cannot be used to list accounts.  Made at first need, not at
    import: every admin command would otherwise pay for one argon2 hash."""
    return _hasher.hash("ourmail-no-such-user")


def hash_password(password: str) -> str:
    """An encoded argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify(encoded: str | None, password: str) -> bool:
    """True if ``password`` matches ``encoded``; None (no such account) always fails."""
    try:
        ok = _hasher.verify(encoded or _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and encoded is not None


def verify_in_thread(encoded: str | None, password: str) -> Deferred[bool]:
    """:func:`verify` on the reactor's thread pool."""
    return deferToThread(verify, encoded, password)
