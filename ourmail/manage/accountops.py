"""Changes to local accounts and aliases, shared by the ``ourmail user`` / ``ourmail alias``
commands (``ourmail/admin/cli.py``) and the admin console (``ourmail/admin/accountadmin.py``),
so both check and store exactly alike.

Each function is blocking (the accounts file is locked, replaced and fsynced; a password is
hashed with argon2id): the server calls them in a thread.  A change that cannot be done raises
:class:`~ourmail.interfaces.AccountRefused`, whose text is the commands' error message.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from pathlib import Path

from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.accounts import AccountDB, AccountError
from ourmail.auth.passwords import hash_password
from ourmail.config import ConfigError, QuotaLimit, Settings, normalise_domain
from ourmail.interfaces import AccountRefused
from ourmail.store.shards import ShardMap

#: Shortest password of a local account, in characters.
MIN_PASSWORD = 8


def served_domains(settings: Settings, db: AccountDB) -> list[str]:
    """The configured domains, then those added with ``ourmail domain add``."""
    return [*settings.domains, *(d for d in db.domains() if d not in settings.domains)]


def address(settings: Settings, db: AccountDB, raw: str) -> str:
    """A full address in a served domain; a bare local part is in the primary domain, as at
    login."""
    try:
        found = normalise_address(raw, settings.primary_domain)
    except AddressError as e:
        raise AccountRefused("bad-address", str(e), raw) from None
    domain = found.rpartition("@")[2]
    if domain not in settings.domains and domain not in db.domains():
        raise AccountRefused(
            "not-served",
            f"{domain} is not a domain served here; add it first with "
            f"`ourmail domain add {domain}`",
            domain,
        )
    return found


def in_use(db: AccountDB, address: str) -> bool:
    """Whether ``address`` (normalised) is a user, alias or group already."""
    return db.has_user(address) or db.alias(address) is not None or db.group(address) is not None


def check_password(password: str) -> None:
    """Refuse a password that is too short."""
    if len(password) < MIN_PASSWORD:
        raise AccountRefused(
            "short-password",
            f"the password must have at least {MIN_PASSWORD} characters",
        )


def existing_user(settings: Settings, db: AccountDB, raw: str) -> str:
    """The address of an existing account."""
    found = address(settings, db, raw)
    if not db.has_user(found):
        raise AccountRefused("no-such-user", f"no such user: {found}", found)
    return found


def add_user(settings: Settings, db: AccountDB, raw: str, password: str) -> str:
    """Create an account (``ourmail user add``); its address."""
    found = address(settings, db, raw)
    if db.has_user(found) or db.alias(found) is not None or db.group(found) is not None:
        raise AccountRefused("exists", f"{found} already exists", found)
    check_password(password)
    try:
        db.add_user(found, hash_password(password))
    except AccountError as e:  # added by another process since the check
        raise AccountRefused("exists", str(e), found) from None
    return found


def set_password(settings: Settings, db: AccountDB, raw: str, password: str) -> str:
    """Give an account a new password (``ourmail user passwd``); its address."""
    found = existing_user(settings, db, raw)
    check_password(password)
    try:
        db.set_password(found, hash_password(password))
    except AccountError as e:
        raise AccountRefused("no-such-user", str(e), found) from None
    return found


def delete_user(settings: Settings, db: AccountDB, raw: str) -> tuple[str, Path, list[str]]:
    """Delete an account (``ourmail user del``); its address, where its mail is kept, and
    the groups it was dropped from (in the same locked update: an address given again later
    inherits no group and no right to send as one)."""
    found = address(settings, db, raw)
    try:
        left = db.delete_user(found)
    except AccountError as e:
        raise AccountRefused("no-such-user", str(e), found) from None
    return found, ShardMap(settings.data_dir).user_dir(found), left


def left_groups_detail(groups: Sequence[str]) -> str:
    """The groups a deleted user was dropped from, as the audit log's detail."""
    return f"left groups: {', '.join(groups)}" if groups else ""


def set_quota(settings: Settings, db: AccountDB, raw: str, limit: QuotaLimit | None) -> str:
    """Give an account its own limit, or (None) the domain's or default one again."""
    found = existing_user(settings, db, raw)
    if limit is not None and any(n is not None and n < 0 for n in (limit.bytes, limit.messages)):
        raise AccountRefused("bad-quota", "a limit must not be negative", found)
    try:
        db.set_quota(found, limit)
    except AccountError as e:
        raise AccountRefused("no-such-user", str(e), found) from None
    return found


def quota_detail(limit: QuotaLimit | None) -> str:
    """A quota change as the audit log's detail."""
    if limit is None:
        return "default"
    return f"bytes={limit.bytes or 0} messages={limit.messages or 0}"


def quota_limit(
    settings: Settings,
    db: AccountDB,
    found: str,
    directory_limit: Callable[[str], QuotaLimit | None] | None = None,
) -> tuple[QuotaLimit, bool]:
    """The limit that applies to an account (as the quota policy finds it), and whether it
    is the account's own."""
    own = db.quota(found)
    if own is not None:
        return own, True
    if directory_limit is not None and (listed := directory_limit(found)) is not None:
        return listed, False
    domain = found.rpartition("@")[2]
    return settings.quota.domains.get(domain, settings.quota.default), False


def alias_address(settings: Settings, db: AccountDB, raw: str) -> str:
    """An alias's normalised address: a full address, or ``@domain`` for a catch-all."""
    if raw.startswith("@"):
        try:
            domain = normalise_domain(raw[1:])
        except ConfigError as e:
            raise AccountRefused("bad-address", str(e), raw) from None
        if domain not in settings.domains and domain not in db.domains():
            raise AccountRefused("not-served", f"{domain} is not a domain served here", domain)
        return "@" + domain
    return address(settings, db, raw)


def alias_targets(settings: Settings, db: AccountDB, raw_targets: Sequence[str]) -> list[str]:
    """An alias's targets, normalised: local users, or addresses elsewhere (forwarded)."""
    targets = []
    for raw in raw_targets:
        try:
            target = normalise_address(raw, settings.primary_domain)
        except AddressError as e:
            raise AccountRefused("bad-target", str(e), raw) from None
        domain = target.rpartition("@")[2]
        local = domain in settings.domains or domain in db.domains()
        if local and not db.has_user(target):
            raise AccountRefused("not-local-user", f"{target} is not a local user", target)
        targets.append(target)  # an address elsewhere: forwarded through the outbound queue
    if not targets:
        raise AccountRefused("no-targets", "an alias needs at least one target")
    return list(dict.fromkeys(targets))


def set_alias(
    settings: Settings, db: AccountDB, raw: str, raw_targets: Sequence[str]
) -> tuple[str, list[str]]:
    """Add or replace an alias (``ourmail alias add``); its address and targets."""
    found = alias_address(settings, db, raw)
    if db.has_user(found):
        raise AccountRefused(
            "is-user", f"{found} is a user; an alias needs an address of its own", found
        )
    if db.group(found) is not None:
        raise AccountRefused(
            "exists", f"{found} is a group; an alias needs an address of its own", found
        )
    targets = alias_targets(settings, db, raw_targets)
    try:
        db.set_alias(found, targets)
    except AccountError as e:  # made a user by another process since the check
        raise AccountRefused("is-user", str(e), found) from None
    return found, targets


def delete_alias(settings: Settings, db: AccountDB, raw: str) -> str:
    """Delete an alias (``ourmail alias del``); its address."""
    lowered = raw.lower()
    found = lowered if lowered.startswith("@") else address(settings, db, lowered)
    try:
        db.delete_alias(found)
    except AccountError as e:
        raise AccountRefused("no-such-alias", str(e), found) from None
    return found


#: Longest reason kept for a disabled account, in characters.
MAX_REASON = 500


def disable_user(settings: Settings, db: AccountDB, raw: str, reason: str) -> str:
    """Disable an account (``ourmail user disable``): no login anywhere, open sessions end
    (``ourmail/auth/revocation.py``), mail to it is still accepted; its address."""
    found = existing_user(settings, db, raw)
    if len(reason) > MAX_REASON or any(c in reason for c in "\r\n\0"):
        raise AccountRefused(
            "bad-reason", f"a reason is one line of at most {MAX_REASON} characters", found
        )
    try:
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        db.set_disabled(found, {"since": since, "reason": reason})
    except AccountError as e:
        raise AccountRefused("no-such-user", str(e), found) from None
    return found


def enable_user(settings: Settings, db: AccountDB, raw: str) -> str:
    """Let a disabled account log in again (``ourmail user enable``); its address."""
    found = existing_user(settings, db, raw)
    if db.disabled(found) is None:
        raise AccountRefused("not-disabled", f"{found} is not disabled", found)
    try:
        db.set_disabled(found, None)
    except AccountError as e:
        raise AccountRefused("no-such-user", str(e), found) from None
    return found
