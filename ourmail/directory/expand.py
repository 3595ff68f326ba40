"""Where mail to a local address goes: users, their forwarding, aliases and local groups,
expanded into the mailboxes that get a copy and the addresses elsewhere it is forwarded to.

Shared by the local directory (:mod:`ourmail.directory.local`, at every RCPT) and by the
commands that change groups and forwarding (:mod:`ourmail.manage.groupops`, to refuse a
forward that loops).  Each address is visited once, so nested groups reach each member once
and a loop stops; at most :data:`MAX_EXPANSION` addresses are visited, as an LDAP group reads
at most ``MAX_MEMBERS`` entries (``ourmail/directory/ldap.py``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

import attrs
from twisted.logger import Logger

from ourmail.auth.accounts import AccountDB

log = Logger()

#: Addresses visited to expand one recipient (groups in groups, forwards of forwards).
MAX_EXPANSION = 1000


@attrs.frozen
class Expansion:
    """The result of :func:`expand`."""

    #: Local users whose mailboxes get a copy, in the order first reached.
    mailboxes: tuple[str, ...]
    #: Addresses in other domains the mail is forwarded to (through the outbound queue).
    forwards: tuple[str, ...]
    #: Whether the expansion came back to its start (a forward or group that loops).
    looped: bool


def expand(
    accounts: AccountDB,
    is_local: Callable[[str], bool],
    start: str,
    first: Iterable[str] | None = None,
) -> Expansion:
    """Expand ``start`` (or, when ``first`` is given, ``first`` in its place: a catch-all's
    targets, or a forward being checked).  A user gets a copy unless they forward without
    keeping one; their forwards, a group's members and an alias's targets are expanded in
    turn.  A local address that is none of these is skipped, except as an alias's target:
    an alias keeps delivering into a deleted user's kept mailbox (docs/admin-console.md).
    The accounts are read once (:meth:`AccountDB.snapshot`), not once per address."""
    data = accounts.snapshot()
    users, groups, aliases = data["users"], data.get("groups", {}), data.get("aliases", {})
    mailboxes: dict[str, None] = {}
    forwards: dict[str, None] = {}
    seen: set[str] = set()
    looped = False
    if first is None:
        pending = collections.deque([(start, False)])
    else:
        seen.add(start)
        pending = collections.deque((a, True) for a in first)
    while pending:
        address, via_alias = pending.popleft()
        if address in seen:
            looped = looped or address == start
            continue
        if len(seen) > MAX_EXPANSION:  # the start, then MAX_EXPANSION others
            log.warn("{a}: more than {n} addresses to expand, the rest left out", a=start,
                     n=MAX_EXPANSION)  # fmt: skip
            break
        seen.add(address)
        if not is_local(address.rpartition("@")[2]):
            forwards[address] = None
        elif (user := users.get(address)) is not None:
            forward = user.get("forward")
            if forward is None or forward["keep"]:
                mailboxes[address] = None
            if forward is not None:
                pending.extend((t, False) for t in forward["to"])
        elif (group := groups.get(address)) is not None:
            pending.extend((m, False) for m in group["members"])
        elif targets := aliases.get(address):
            pending.extend((t, True) for t in targets)
        elif via_alias:
            mailboxes[address] = None
    return Expansion(tuple(mailboxes), tuple(forwards), looped)
