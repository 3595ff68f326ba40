"""The local account database: ``<data>/accounts.json``.

One JSON file holds the local users (address -> argon2id hash) and the domains added with
``ourmail domain add``.  The admin commands change it under an exclusive lock with an atomic,
fsynced replace; the server notices the new file by its modification time at the next lookup, so
changes take effect without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ourmail.config import QuotaLimit
from ourmail.fsutil import write_atomic

FILE_NAME = "accounts.json"


class AccountError(ValueError):
    """An account operation that cannot be done (duplicate, missing, bad file)."""


class NotAMember(AccountError):
    """An address to remove from a group is not one of its members."""

    def __init__(self, member: str) -> None:
        super().__init__(f"{member} is no member")
        self.member = member


#: Sees the changed accounts inside the file's lock, before they are written; raises to
#: refuse the change (nothing is written).
Check = Callable[[Mapping[str, Any]], None]


class AccountDB:
    """Read-mostly view of ``accounts.json`` with locked, atomic updates."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME
        self._lock_path = data_dir / ".accounts.lock"
        #: (the file's stamp, its content) as one value: threads (the admin console's) that
        #: read it at once can never pair one reading's stamp with another's content.
        self._view: tuple[tuple[int, int, int] | None, dict[str, Any]] = (
            None,
            {"users": {}, "domains": []},
        )

    def _fresh(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._view = (None, {"users": {}, "domains": []})
            return self._view[1]
        # Updates replace the file, so a new inode tells of a change that kept the size
        # within the file system's timestamp granularity (a new password hash).
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        view = self._view
        if stamp != view[0]:
            view = self._view = (stamp, self._read())
        return view[1]

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise AccountError(f"{self.path} is unreadable: {e}") from e
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("users"), dict)
            or not isinstance(data.get("domains"), list)
        ):
            raise AccountError(f"{self.path} is not an ourmail accounts file")
        return data

    def password_hash(self, address: str) -> str | None:
        """The stored hash for ``address`` (normalised), or None if there is no such user."""
        user = self._fresh()["users"].get(address)
        return user["password"] if user else None

    def quota(self, address: str) -> QuotaLimit | None:
        """The user's own quota, or None when the domain or default limit applies."""
        user = self._fresh()["users"].get(address)
        if not user or "quota" not in user:
            return None
        q = user["quota"]
        return QuotaLimit(bytes=q.get("bytes") or None, messages=q.get("messages") or None)

    def set_quota(self, address: str, limit: QuotaLimit | None) -> None:
        """Give the user their own limit, or (None) return them to the domain's or default."""
        with self._update() as data:
            if address not in data["users"]:
                raise AccountError(f"no such user: {address}")
            if limit is None:
                data["users"][address].pop("quota", None)
            else:
                data["users"][address]["quota"] = {
                    "bytes": limit.bytes or 0,
                    "messages": limit.messages or 0,
                }

    def pop3_delete(self, address: str) -> str | None:
        """The user's own POP3 deletion policy, or None when the domain's or default applies."""
        user = self._fresh()["users"].get(address)
        return user.get("pop3_delete") if user else None

    def set_pop3_delete(self, address: str, policy: str | None) -> None:
        """Give the user their own POP3 deletion policy, or (None) the domain's or default."""
        with self._update() as data:
            if address not in data["users"]:
                raise AccountError(f"no such user: {address}")
            if policy is None:
                data["users"][address].pop("pop3_delete", None)
            else:
                data["users"][address]["pop3_delete"] = policy

    def alias(self, address: str) -> list[str] | None:
        """The local users an alias delivers to, or None if it is no alias."""
        targets = self._fresh().get("aliases", {}).get(address)
        return list(targets) if targets else None

    def aliases(self) -> dict[str, list[str]]:
        return dict(self._fresh().get("aliases", {}))

    def set_alias(self, address: str, targets: list[str]) -> None:
        with self._update() as data:
            if address in data["users"]:
                raise AccountError(f"{address} is a user, not an alias")
            if address in data.get("groups", {}):
                raise AccountError(f"{address} is a group, not an alias")
            data.setdefault("aliases", {})[address] = targets

    def delete_alias(self, address: str) -> None:
        with self._update() as data:
            if data.get("aliases", {}).pop(address, None) is None:
                raise AccountError(f"no such alias: {address}")

    def has_user(self, address: str) -> bool:
        return address in self._fresh()["users"]

    def users(self) -> list[str]:
        return sorted(self._fresh()["users"])

    def domains(self) -> list[str]:
        return list(self._fresh()["domains"])

    @contextlib.contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read() if self.path.exists() else {"users": {}, "domains": []}
            yield data
            write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True).encode(), 0o600)
            self._view = (None, self._view[1])

    def add_user(self, address: str, password_hash: str) -> None:
        with self._update() as data:
            if address in data["users"] or address in data.get("aliases", {}):
                raise AccountError(f"{address} already exists")
            if address in data.get("groups", {}):
                raise AccountError(f"{address} already exists")
            data["users"][address] = {"password": password_hash}

    def set_password(self, address: str, password_hash: str) -> None:
        with self._update() as data:
            if address not in data["users"]:
                raise AccountError(f"no such user: {address}")
            data["users"][address]["password"] = password_hash

    def delete_user(self, address: str) -> list[str]:
        """Delete a user and, in the same locked update, drop them from every local group
        (a recycled address inherits no group and no right to send as one); the groups they
        were dropped from."""
        with self._update() as data:
            if data["users"].pop(address, None) is None:
                raise AccountError(f"no such user: {address}")
            left = []
            for group, found in data.get("groups", {}).items():
                if address in found["members"]:
                    found["members"] = [m for m in found["members"] if m != address]
                    left.append(group)
            return left

    def add_domain(self, domain: str) -> None:
        with self._update() as data:
            if domain in data["domains"]:
                raise AccountError(f"{domain} is already served")
            data["domains"].append(domain)

    # -- local groups and forwarding (docs/admin-console.md#groups) ---------------------------

    def snapshot(self) -> Mapping[str, Any]:
        """The whole file as last read (re-read when it changed), for a reader that asks many
        questions at once (a group's expansion): one ``stat``, not one per question.  Never
        change it."""
        return self._fresh()

    def group(self, address: str) -> tuple[str, list[str]] | None:
        """A local group's display name and members, or None if it is no group."""
        found = self._fresh().get("groups", {}).get(address)
        return (found["name"], list(found["members"])) if found else None

    def groups(self) -> dict[str, tuple[str, list[str]]]:
        """Every local group: address -> (display name, members)."""
        return {
            a: (g["name"], list(g["members"])) for a, g in self._fresh().get("groups", {}).items()
        }

    def add_group(
        self, address: str, name: str, members: list[str], check: Check | None = None
    ) -> None:
        with self._update() as data:
            if address in data["users"] or address in data.get("aliases", {}):
                raise AccountError(f"{address} already exists")
            if address in data.setdefault("groups", {}):
                raise AccountError(f"{address} already exists")
            data["groups"][address] = {"name": name, "members": members}
            if check is not None:
                check(data)

    def set_group_members(self, address: str, members: list[str]) -> None:
        with self._update() as data:
            if address not in data.get("groups", {}):
                raise AccountError(f"no such group: {address}")
            data["groups"][address]["members"] = members

    def add_group_members(
        self, address: str, members: list[str], check: Check | None = None
    ) -> None:
        """Add ``members`` (those not already in) to a group, read and written under the
        file's lock so two admins' changes never undo each other; ``check`` sees the changed
        accounts before they are written and raises to refuse the change."""
        with self._update() as data:
            group = data.get("groups", {}).get(address)
            if group is None:
                raise AccountError(f"no such group: {address}")
            group["members"] = list(dict.fromkeys([*group["members"], *members]))
            if check is not None:
                check(data)

    def remove_group_members(self, address: str, members: list[str]) -> None:
        """Remove ``members`` from a group under the file's lock; :class:`NotAMember` (and
        nothing changed) when one of them is not in it."""
        with self._update() as data:
            group = data.get("groups", {}).get(address)
            if group is None:
                raise AccountError(f"no such group: {address}")
            missing = [m for m in members if m not in group["members"]]
            if missing:
                raise NotAMember(missing[0])
            group["members"] = [m for m in group["members"] if m not in members]

    def delete_group(self, address: str) -> None:
        with self._update() as data:
            if data.get("groups", {}).pop(address, None) is None:
                raise AccountError(f"no such group: {address}")

    def forward(self, address: str) -> tuple[list[str], bool] | None:
        """Where a user's mail is forwarded and whether a copy is kept, or None."""
        user = self._fresh()["users"].get(address)
        found = user.get("forward") if user else None
        return (list(found["to"]), bool(found["keep"])) if found else None

    def set_forward(
        self,
        address: str,
        targets: list[str] | None,
        keep: bool = True,
        check: Check | None = None,
    ) -> None:
        """Forward a user's mail to ``targets`` (keeping a copy or not); None: stop."""
        with self._update() as data:
            if address not in data["users"]:
                raise AccountError(f"no such user: {address}")
            if targets is None:
                data["users"][address].pop("forward", None)
            else:
                data["users"][address]["forward"] = {"to": targets, "keep": keep}
                if check is not None:
                    check(data)

    def disabled(self, address: str) -> dict[str, str] | None:
        """``{"since": ..., "reason": ...}`` when the account is disabled, else None."""
        user = self._fresh()["users"].get(address)
        return user.get("disabled") if user else None

    def set_disabled(self, address: str, state: dict[str, str] | None) -> None:
        """Disable the account (``state``: since, reason) or (None) enable it again."""
        with self._update() as data:
            if address not in data["users"]:
                raise AccountError(f"no such user: {address}")
            if state is None:
                data["users"][address].pop("disabled", None)
            else:
                data["users"][address]["disabled"] = dict(state)

    def login_state(self, address: str) -> tuple[str | None, bool]:
        """The stored hash (None: no such user) and whether the account is disabled, from one
        look at the file."""
        user = self._fresh()["users"].get(address)
        return (user["password"], "disabled" in user) if user else (None, False)

    def stamp(self) -> tuple[int, int, int] | None:
        """The file's (inode, modification time, size), read again first if it changed: called
        in a thread, it keeps the reactor's lookups that follow to a ``stat``."""
        self._fresh()
        return self._view[0]
