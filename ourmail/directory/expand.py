"""Where mail to a local address goes: users, their forwarding, aliases and local groups,
expanded into the mailboxes that get a copy and the addresses elsewhere it is forwarded to.

Shared by the local directory (:mod:`ourmail.directory.local`, at every RCPT) and by the
commands that change groups and forwarding (:mod:`ourmail.manage.groupops`, to refuse a
forward that loops, and a change that would make some address expand too far).  Each address
is visited once, so nested groups reach each member once and a loop stops; an expansion past
:data:`MAX_EXPANSION` destinations is refused whole (as an LDAP group reads at most
``MAX_MEMBERS`` entries, ``ourmail/directory/ldap.py``), never cut short.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ourmail.auth.accounts import AccountDB
from ourmail.interfaces import ExpansionTooLarge

#: Most destinations (mailboxes and addresses elsewhere) one recipient expands to.
MAX_EXPANSION = 1000
#: Most distinct addresses (users, groups, aliases) visited to expand one recipient.
MAX_VISITED = 5 * MAX_EXPANSION
#: Most members, targets and forwards read to expand one recipient (groups sharing members
#: list them again and again): the bound on the work done on the reactor at each RCPT.
MAX_STEPS = 20 * MAX_EXPANSION


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
    targets, or a forward being checked) as :func:`expand_data` does, over the accounts as
    last read (:meth:`AccountDB.snapshot`): they are read once, not once per address."""
    return expand_data(accounts.snapshot(), is_local, start, first)


def expand_data(
    data: Mapping[str, Any],
    is_local: Callable[[str], bool],
    start: str,
    first: Iterable[str] | None = None,
) -> Expansion:
    """Expand ``start`` over the accounts ``data`` (the ``accounts.json`` mapping).  A user
    gets a copy unless they forward without keeping one; their forwards, a group's members
    and an alias's targets are expanded in turn.  A local address that is none of these is
    skipped, except as an alias's target (however else it was reached first): an alias keeps
    delivering into a deleted user's kept mailbox (docs/admin-console.md).

    Raises :class:`~ourmail.interfaces.ExpansionTooLarge` past :data:`MAX_EXPANSION`
    destinations, :data:`MAX_VISITED` addresses or :data:`MAX_STEPS` entries read: a
    recipient is taken whole or not at all, never with members silently left out.  Each
    address waits at most once."""
    users, groups, aliases = data["users"], data.get("groups", {}), data.get("aliases", {})
    mailboxes: dict[str, None] = {}
    forwards: dict[str, None] = {}
    #: Each address reached, and whether an alias reached it (then it may be a kept mailbox).
    reached: dict[str, bool] = {}
    #: Local addresses that are nothing, reached first other than through an alias.
    orphans: set[str] = set()
    pending: collections.deque[str] = collections.deque()
    looped = False
    steps = 0

    def reach(address: str, via_alias: bool) -> None:
        nonlocal looped, steps
        steps += 1
        if steps > MAX_STEPS:
            raise ExpansionTooLarge(start, MAX_EXPANSION)
        if address == start:
            looped = True
            return
        if address not in reached:
            if len(reached) >= MAX_VISITED:
                raise ExpansionTooLarge(start, MAX_VISITED)
            reached[address] = via_alias
            pending.append(address)
        elif via_alias and not reached[address]:
            reached[address] = True
            if address in orphans:
                add(mailboxes, address)

    def add(found: dict[str, None], address: str) -> None:
        found[address] = None
        if len(mailboxes) + len(forwards) > MAX_EXPANSION:
            raise ExpansionTooLarge(start, MAX_EXPANSION)

    if first is None:
        reached[start] = False
        pending.append(start)
    else:
        for address in first:
            reach(address, True)
    while pending:
        address = pending.popleft()
        if not is_local(address.rpartition("@")[2]):
            add(forwards, address)
        elif (user := users.get(address)) is not None:
            forward = user.get("forward")
            if forward is None or forward["keep"]:
                add(mailboxes, address)
            for target in forward["to"] if forward is not None else ():
                reach(target, False)
        elif (group := groups.get(address)) is not None:
            for member in group["members"]:
                reach(member, False)
        elif targets := aliases.get(address):
            for target in targets:
                reach(target, True)
        elif reached[address]:
            add(mailboxes, address)
        else:
            orphans.add(address)
    return Expansion(tuple(mailboxes), tuple(forwards), looped)
