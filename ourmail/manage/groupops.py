"""Changes to local groups and to users' forwarding, shared by the ``ourmail group`` and
``ourmail user forward`` commands (``ourmail/admin/groupcmd.py``) and the admin console
(``ourmail/manage/routingadmin.py``), so both check and store exactly alike.

A group is an address of a served domain with a display name and members: local users,
other groups, aliases, or addresses elsewhere (forwarded through the outbound queue).  A user
may forward their mail to at most :data:`MAX_FORWARDS` addresses, keeping a copy or not.

Each function is blocking (the accounts file is locked, replaced and fsynced): the server
calls them in a thread.  A change that cannot be done raises
:class:`~ourmail.interfaces.AccountRefused`, whose text is the commands' error message.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.accounts import AccountDB, AccountError, Check, NotAMember
from ourmail.config import Settings
from ourmail.directory.expand import expand, expand_data
from ourmail.interfaces import AccountRefused, ExpansionTooLarge
from ourmail.manage import accountops as ops

#: Most members of one group (each a user, group, alias or address elsewhere).
MAX_MEMBERS = 1000
#: Most members of one group in domains not served here: each is a message sent out, so a
#: group is no amplifier (the expansion of nested groups is bounded as a whole too).
MAX_OUTSIDE_MEMBERS = 100
#: Most addresses one user forwards to.
MAX_FORWARDS = 10
#: Longest display name of a group, in characters.
MAX_NAME = 200


def _is_local(settings: Settings, db: AccountDB, domain: str) -> bool:
    return domain in settings.domains or domain in db.domains()


def display_name(name: str) -> str:
    """A group's display name: printable, one line, at most :data:`MAX_NAME` characters."""
    name = name.strip()
    if len(name) > MAX_NAME or any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise AccountRefused("bad-name", f"a group's name is one line of at most {MAX_NAME}")
    return name


def existing_group(settings: Settings, db: AccountDB, raw: str) -> str:
    """The address of an existing group."""
    found = ops.address(settings, db, raw)
    if db.group(found) is None:
        raise AccountRefused("no-such-group", f"no such group: {found}", found)
    return found


def member_addresses(
    settings: Settings, db: AccountDB, raw_members: Sequence[str], *, must_exist: bool = True
) -> list[str]:
    """Members normalised, duplicates dropped: a local address must be a user, a group or an
    alias (when ``must_exist``); an address elsewhere is forwarded to."""
    if len(raw_members) > MAX_MEMBERS:
        raise AccountRefused("too-many", f"a group has at most {MAX_MEMBERS} members")
    members = []
    for raw in raw_members:
        try:
            member = normalise_address(raw, settings.primary_domain)
        except AddressError as e:
            raise AccountRefused("bad-target", str(e), raw) from None
        known = db.has_user(member) or db.group(member) is not None or db.alias(member)
        if must_exist and _is_local(settings, db, member.rpartition("@")[2]) and not known:
            raise AccountRefused("not-local-user", f"{member} is not a local user", member)
        members.append(member)
    return list(dict.fromkeys(members))


def add_group(
    settings: Settings, db: AccountDB, raw: str, name: str, raw_members: Sequence[str] = ()
) -> str:
    """Create a group (``ourmail group add``); its address."""
    found = ops.address(settings, db, raw)
    if db.has_user(found) or db.alias(found) is not None or db.group(found) is not None:
        raise AccountRefused("exists", f"{found} already exists", found)
    if found in member_addresses(settings, db, raw_members, must_exist=False):
        raise AccountRefused("bad-target", "a group cannot be its own member", found)
    members = member_addresses(settings, db, raw_members)
    try:
        db.add_group(found, display_name(name), members, _member_check(settings, db, found))
    except AccountError as e:  # made by another process since the check
        raise AccountRefused("exists", str(e), found) from None
    return found


def delete_group(settings: Settings, db: AccountDB, raw: str) -> str:
    """Delete a group (``ourmail group del``); its address.  Groups that list it as a member
    keep the entry, which then delivers nowhere."""
    found = existing_group(settings, db, raw)
    try:
        db.delete_group(found)
    except AccountError as e:
        raise AccountRefused("no-such-group", str(e), found) from None
    return found


def add_members(settings: Settings, db: AccountDB, raw: str, raw_members: Sequence[str]) -> str:
    """Add members to a group (``ourmail group member-add``); the group's address."""
    found = existing_group(settings, db, raw)
    new = member_addresses(settings, db, raw_members)
    if found in new:
        raise AccountRefused("bad-target", "a group cannot be its own member", found)
    try:  # read and written under the accounts' lock: a concurrent change is kept
        db.add_group_members(found, new, _member_check(settings, db, found))
    except AccountError as e:  # deleted by another process since the check
        raise AccountRefused("no-such-group", str(e), found) from None
    return found


def remove_members(settings: Settings, db: AccountDB, raw: str, raw_members: Sequence[str]) -> str:
    """Remove members from a group (``ourmail group member-del``); the group's address."""
    found = existing_group(settings, db, raw)
    gone = member_addresses(settings, db, raw_members, must_exist=False)
    try:  # read and written under the accounts' lock: a concurrent change is kept
        db.remove_group_members(found, gone)
    except NotAMember as e:
        message = f"{e.member} is no member of {found}"
        raise AccountRefused("no-such-member", message, found) from None
    except AccountError as e:  # deleted by another process since the check
        raise AccountRefused("no-such-group", str(e), found) from None
    return found


def _member_check(settings: Settings, db: AccountDB, group: str) -> Check:
    """A check of a group's changed member list: at most :data:`MAX_MEMBERS` members, of
    them at most :data:`MAX_OUTSIDE_MEMBERS` elsewhere, and no address expanding too far."""
    local = frozenset(ops.served_domains(settings, db))
    expansion_check = _expansion_check(settings, db, group)

    def check(data: Mapping[str, Any]) -> None:
        members = data["groups"][group]["members"]
        if len(members) > MAX_MEMBERS:
            raise AccountRefused("too-many", f"a group has at most {MAX_MEMBERS} members", group)
        outside = [m for m in members if m.rpartition("@")[2] not in local]
        if len(outside) > MAX_OUTSIDE_MEMBERS:
            raise AccountRefused(
                "too-many",
                f"a group has at most {MAX_OUTSIDE_MEMBERS} members in domains not served here",
                group,
            )
        expansion_check(data)

    return check


def _expansion_check(settings: Settings, db: AccountDB, changed: str) -> Check:
    """A check (run under the accounts' lock, on the changed accounts) that refuses the
    change when ``changed``, or any group, alias or forwarding user whose mail reaches it,
    would expand past :data:`~ourmail.directory.expand.MAX_EXPANSION` destinations: such a
    recipient would be refused at RCPT, so the change is refused here, where an admin
    reads why."""
    local = frozenset(ops.served_domains(settings, db))

    def check(data: Mapping[str, Any]) -> None:
        for address in _reaching(data, changed):
            try:
                expand_data(data, local.__contains__, address)
            except ExpansionTooLarge as e:
                raise AccountRefused(
                    "too-large",
                    f"mail to {address} would go to more than {e.limit} addresses",
                    changed,
                ) from None

    return check


def _reaching(data: Mapping[str, Any], changed: str) -> list[str]:
    """``changed`` and every address whose mail reaches it (as a group's member, an
    alias's target or a user's forward), each once."""
    sources: dict[str, list[str]] = {}
    for group, found in data.get("groups", {}).items():
        for member in found["members"]:
            sources.setdefault(member, []).append(group)
    for alias, targets in data.get("aliases", {}).items():
        for target in targets:
            sources.setdefault(target, []).append(alias)
    for user, found in data["users"].items():
        for target in (found.get("forward") or {}).get("to", ()):
            sources.setdefault(target, []).append(user)
    reaching = {changed: None}
    pending = [changed]
    while pending:
        for source in sources.get(pending.pop(), ()):
            if source not in reaching and not source.startswith("@"):
                reaching[source] = None
                pending.append(source)
    return list(reaching)


def set_forward(
    settings: Settings,
    db: AccountDB,
    raw: str,
    raw_targets: Sequence[str] | None,
    keep: bool = True,
) -> str:
    """Forward a user's mail to ``raw_targets``, keeping a copy or not; None: stop
    forwarding (``ourmail user forward``).  Refused: more than :data:`MAX_FORWARDS`
    targets, the user themselves, or targets whose mail comes back to the user (a loop)."""
    found = ops.existing_user(settings, db, raw)
    if raw_targets is None:
        targets = None
    else:
        if len(raw_targets) > MAX_FORWARDS:
            raise AccountRefused("too-many", f"at most {MAX_FORWARDS} forwarding addresses")
        targets = member_addresses(settings, db, raw_targets)
        if not targets:
            raise AccountRefused("no-targets", "forwarding needs at least one address", found)
        if found in targets:
            raise AccountRefused("self-forward", f"{found} cannot forward to itself", found)
        local = frozenset(ops.served_domains(settings, db))
        try:
            looped = expand(db, local.__contains__, found, targets).looped
        except ExpansionTooLarge as e:
            raise AccountRefused(
                "too-large", f"mail to {found} would go to more than {e.limit} addresses", found
            ) from None
        if looped:
            raise AccountRefused(
                "forward-loop", f"mail forwarded from {found} would come back to it", found
            )
    try:
        db.set_forward(found, targets, keep, _expansion_check(settings, db, found))
    except AccountError as e:
        raise AccountRefused("no-such-user", str(e), found) from None
    return found


def forward_detail(targets: Sequence[str] | None, keep: bool) -> str:
    """A forwarding change as the audit log's detail."""
    if targets is None:
        return "off"
    return f"to={', '.join(targets)} keep={'yes' if keep else 'no'}"
