"""Each user's own settings (``IPreferences``): one small JSON file per user.

``<data>/prefs/<hh>/<sha256 of the address>.json``: the file name is a hash, so no address
(with ``/``, ``..`` or any byte) can name a path of its own choosing.  A write replaces the
whole file atomically (temporary file, fsync, rename, fsync of the directory) in a thread;
writes of one user are made one after another, so the last one wins whole.  Reads come from a
bounded in-memory table, checked against the file's identity (inode, mtime, size) so that a
value written by another process (an admin command, the main process for a worker) is seen.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.fsutil import write_atomic
from ourmail.interfaces import IPreferences

log = Logger()

#: Bytes one user's settings may take on disk.
MAX_BYTES = 256 * 1024
#: Users whose settings are kept in memory, at most (the least recently read go first).
MAX_CACHED = 10_000
#: Longest key.
MAX_KEY = 64

_Stamp = tuple[int, int, int]


@implementer(IPreferences)
class PreferenceFiles:
    """:class:`IPreferences` kept in ``<data>/prefs``."""

    def __init__(self, root: Path, max_cached: int = MAX_CACHED) -> None:
        self.root = root
        self.max_cached = max_cached
        self._cache: collections.OrderedDict[str, tuple[_Stamp | None, dict[str, Any]]] = (
            collections.OrderedDict()
        )
        self._locks: dict[str, DeferredLock] = {}

    def path(self, user: str) -> Path:
        """The file of ``user``'s settings."""
        digest = hashlib.sha256(user.lower().encode("utf-8", "surrogatepass")).hexdigest()
        return self.root / digest[:2] / f"{digest}.json"

    @staticmethod
    def _stamp(path: Path) -> _Stamp | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _values(self, user: str) -> dict[str, Any]:
        path = self.path(user)
        stamp = self._stamp(path)
        cached = self._cache.get(user)
        if cached is not None and cached[0] == stamp:
            self._cache.move_to_end(user)
            return cached[1]
        values: dict[str, Any] = {}
        if stamp is not None:
            try:
                with open(path, "rb") as f:
                    loaded = json.loads(f.read(MAX_BYTES + 1))
            except (OSError, ValueError) as e:
                log.warn(
                    "settings of {user} unreadable ({error}): defaults used", user=user, error=e
                )
            else:
                if isinstance(loaded, dict):
                    values = loaded
        self._cache[user] = (stamp, values)
        self._cache.move_to_end(user)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return values

    def get(self, user: str, key: str) -> object:
        return self._values(user).get(key)

    def set(self, user: str, key: str, value: object) -> Deferred[None]:
        if not key or len(key) > MAX_KEY:
            raise ValueError(f"bad settings key {key!r}")
        try:
            json.dumps(value)
        except TypeError as e:
            raise ValueError(f"a setting must be a JSON value: {e}") from e
        lock = self._locks.setdefault(user, DeferredLock())

        def write() -> Deferred[None]:
            values = dict(self._values(user))
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
            data = json.dumps(values, ensure_ascii=False, sort_keys=True).encode("utf-8")
            if len(data) > MAX_BYTES:
                raise ValueError(f"settings of {user} would exceed {MAX_BYTES} bytes")
            path = self.path(user)

            def store() -> None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, data)

            def stored(_: None) -> None:
                self._cache[user] = (self._stamp(path), values)

            return deferToThread(store).addCallback(stored)

        def released(result: object) -> object:
            if not lock.locked and not lock.waiting:
                self._locks.pop(user, None)
            return result

        d: Deferred[None] = lock.run(write)
        return d.addBoth(released)
