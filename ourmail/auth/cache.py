"""A short-lived cache of verified logins, as Dovecot's ``auth_cache``.

A mail client reconnects often, and after a network blip thousands reconnect at once; each
login costs an argon2id verification (tens to hundreds of milliseconds of CPU) or an LDAP bind.
:class:`CachingChecker` wraps the portal's checker and remembers a verified success for a few
seconds, so a storm costs one check per account instead of one per connection:

* The key is HMAC-SHA256(a random secret of this process, name NUL password): the password is
  never kept, and the key is worthless outside this process.
* Only successes are remembered.  A wrong password misses and goes to the checker (and the
  caller's failure throttle) as before.
* Each entry keeps the checker's *credential stamp* of the login taken before it was checked
  (:class:`IStampedChecker`: for local accounts the stored hash).  A hit whose stamp has
  changed since (``ourmail user passwd`` in any process, the account deleted) is a miss.
  Checkers without stamps (LDAP) notice changes when the entry expires.
* Logins of the same name and password that arrive while one is being checked wait for that
  check instead of each starting their own.
* Entries expire after ``ttl`` seconds; at most ``size`` are kept, least recently used first out.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
from collections.abc import Hashable
from typing import Any

import attrs
from twisted.cred import credentials
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail.config import LoginCacheSettings


class IStampedChecker(ICredentialsChecker):
    """A checker that can tell cheaply when a login's credentials may have changed."""

    def credential_stamp(username: bytes | str) -> Hashable:
        """A hashable value that changes whenever what decides the login of ``username`` changes
        (its password set, the account deleted or disabled).  Called on the reactor thread for
        every login, so it must not block for long."""


@attrs.frozen
class _Entry:
    expires: float
    stamp: Hashable
    avatar_id: Any


@implementer(IStampedChecker)
class CachingChecker:
    """``checker`` with verified logins remembered (see the module docstring)."""

    def __init__(
        self, checker: ICredentialsChecker, clock: IReactorTime, settings: LoginCacheSettings
    ) -> None:
        self.checker = checker
        self.clock = clock
        self.settings = settings
        self.credentialInterfaces = checker.credentialInterfaces
        self._secret = secrets.token_bytes(32)
        self._entries: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()
        #: (key, stamp) -> callers waiting for the check in progress of that login.
        self._checking: dict[tuple[bytes, Hashable], list[Deferred[Any]]] = {}

    def credential_stamp(self, username: bytes | str) -> Hashable:
        if IStampedChecker.providedBy(self.checker):
            return self.checker.credential_stamp(username)
        return None

    def _key(self, creds: credentials.IUsernamePassword) -> bytes:
        name, password = creds.username, creds.password
        data = (name if isinstance(name, bytes) else name.encode("utf-8", "surrogatepass")) + b"\0"
        data += password if isinstance(password, bytes) else password.encode("utf-8", "replace")
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred[Any]:
        key = self._key(creds)
        stamp = self.credential_stamp(creds.username)
        now = self.clock.seconds()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires > now and entry.stamp == stamp:
                self._entries.move_to_end(key)
                return succeed(entry.avatar_id)
            del self._entries[key]
        waiting = self._checking.get((key, stamp))
        if waiting is not None:
            d: Deferred[Any] = Deferred()
            waiting.append(d)
            return d
        self._checking[(key, stamp)] = []
        checked = maybeDeferred(self.checker.requestAvatarId, creds)
        return checked.addBoth(self._checked, key, stamp, now + self.settings.ttl)

    def _checked(self, result: Any, key: bytes, stamp: Hashable, expires: float) -> Any:
        waiting = self._checking.pop((key, stamp))
        if not isinstance(result, Failure):
            self._entries[key] = _Entry(expires, stamp, result)
            self._entries.move_to_end(key)
            while len(self._entries) > self.settings.size:
                self._entries.popitem(last=False)
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
        return result

    def __len__(self) -> int:
        return len(self._entries)
