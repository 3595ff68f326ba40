"""Slowing down password guessing: delays, then short lockouts, per client and per account.

* **Delay.** Each failure from a client doubles the delay added to its next failed reply (base,
  2x, 4x …, up to ``max_delay``).  Only replies to failures are delayed, so a real user is never
  slowed by an attacker elsewhere.
* **Client lockout.** A client address with ``client_limit`` failures within ``window`` is
  refused for ``client_lockout`` seconds: its logins fail without the password being checked,
  so a flood costs no password-hashing CPU either.
* **Account lockout.** An account with ``account_limit`` failures within ``window`` (from any
  addresses) is refused for ``account_lockout`` seconds, except from addresses that logged in
  to it successfully before: an attacker elsewhere cannot lock a user out of their usual
  device, and the lockout is short.
* Failures are forgotten after ``window`` seconds without one; a success forgets the client's.

Lockouts are logged (account and address, never a password) by the caller.

One table per server: every login (submission, IMAP, POP3) is checked in the main process.
The MX worker processes (``[smtp] mx_processes``) offer no AUTH, so they never consult it.
"""

from __future__ import annotations

import collections

import attrs
from twisted.internet.interfaces import IReactorTime

from ourmail.config import ThrottleSettings

#: Addresses remembered per account as having logged in successfully.
KNOWN_CLIENTS = 20
#: Clients and accounts tracked at once; the oldest are forgotten beyond this.
MAX_TRACKED = 100_000


@attrs.define
class _Record:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


#: What :meth:`FailureThrottle.refused` says: the client itself guessed too often...
CLIENT_LOCKED = "client locked out"
#: ...or the account is locked out (for clients that never logged in to it).
ACCOUNT_LOCKED = "account locked out"


class FailureThrottle:
    def __init__(self, clock: IReactorTime, settings: ThrottleSettings) -> None:
        self.clock = clock
        self.settings = settings
        self._clients: collections.OrderedDict[str, _Record] = collections.OrderedDict()
        self._accounts: collections.OrderedDict[str, _Record] = collections.OrderedDict()
        self._known: dict[str, collections.OrderedDict[str, None]] = {}

    def refused(self, client: str, account: str) -> str | None:
        """Why a login attempt must fail without checking the password, or None."""
        now = self.clock.seconds()
        rec = self._clients.get(client)
        if rec is not None and rec.locked_until > now:
            return CLIENT_LOCKED
        rec = self._accounts.get(account)
        known = self._known.get(account, {})
        if rec is not None and rec.locked_until > now and client not in known:
            return ACCOUNT_LOCKED
        return None

    def failed(
        self, client: str, account: str, against_client: bool = True
    ) -> tuple[float, str | None]:
        """Record a failure; the seconds to wait before replying, and the lockout it started
        (``"client"`` or ``"account"``) if any.

        ``against_client`` False (the right password of a disabled account: a leaver's phone
        retrying, no guess) counts it against the account only, so a shared address (an
        office's NAT) is not slowed or locked out by it; the delay is still the one a wrong
        password from the client would get now, so the two cannot be told apart."""
        s = self.settings
        now = self.clock.seconds()
        started = None
        if against_client:
            by_client = self._count(self._clients, client, now)
            if self._lock(by_client, s.client_limit, s.client_lockout, now):
                started = "client"
            failures = by_client.count
        else:
            rec = self._clients.get(client)
            fresh = rec is not None and now - rec.last <= s.window
            failures = (rec.count if fresh and rec is not None else 0) + 1
        by_account = self._count(self._accounts, account, now)
        if self._lock(by_account, s.account_limit, s.account_lockout, now):
            started = started or "account"
        return min(s.base_delay * 2 ** (min(failures, 64) - 1), s.max_delay), started

    @staticmethod
    def _lock(rec: _Record, limit: int, seconds: float, now: float) -> bool:
        """Lock ``rec`` when it reached ``limit``; once the lockout is over, each further failure
        within the window locks it again."""
        if rec.count >= limit and rec.locked_until <= now:
            rec.locked_until = now + seconds
            return True
        return False

    def succeeded(self, client: str, account: str) -> None:
        self._clients.pop(client, None)
        known = self._known.setdefault(account, collections.OrderedDict())
        known[client] = None
        known.move_to_end(client)
        if len(known) > KNOWN_CLIENTS:
            known.popitem(last=False)
        if len(self._known) > MAX_TRACKED:
            self._known.pop(next(iter(self._known)))

    def _count(self, table: collections.OrderedDict[str, _Record], key: str, now: float) -> _Record:
        """Count a failure for ``key``; its record."""
        rec = table.get(key)
        if rec is None or (now - rec.last > self.settings.window and rec.locked_until <= now):
            rec = table[key] = _Record()
        rec.count += 1
        rec.last = now
        table.move_to_end(key)
        if len(table) > MAX_TRACKED:
            table.popitem(last=False)
        return rec
