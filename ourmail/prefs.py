"""Each user's own settings (``IPreferences``): one small JSON file per user.

``<data>/prefs/<hh>/<sha256 of the lower-case address>.json``: the file name is a hash, so no
address (with ``/``, ``..`` or any byte) can name a path of its own choosing.

A write reads the file afresh, changes one key and replaces the file atomically (temporary
file, fsync, rename, fsync of the directory), all in a thread under an exclusive ``flock`` of
the user's ``.lock`` file: writers in other processes (an MX worker, an admin command) take
the same lock, so no update is lost.  A file that exists but cannot be read is never
overwritten: the write fails instead.  Reads come from a bounded in-memory table, checked
against the file's identity (inode, mtime, size) so that a value written elsewhere is seen;
what a read returns is a copy.
"""

from __future__ import annotations

import collections
import copy
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.fsutil import fsync_dir, write_atomic
from ourmail.interfaces import IPreferences

log = Logger()

#: Bytes one user's settings may take on disk.
MAX_BYTES = 256 * 1024
#: Users whose settings are kept in memory, at most (the least recently read go first).
MAX_CACHED = 10_000
#: Longest key.
MAX_KEY = 64

_Stamp = tuple[int, int, int]


class UnreadableSettings(OSError):
    """A user's settings file exists but cannot be read or is not a JSON object."""


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read(path: Path) -> dict[str, Any]:
    """The settings in ``path`` ({} when there is no file); UnreadableSettings otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise UnreadableSettings(f"{path}: {e}") from e
    try:
        loaded = json.loads(data) if len(data) <= MAX_BYTES else None
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict):
        raise UnreadableSettings(f"{path} is not a settings file of at most {MAX_BYTES} bytes")
    return loaded


def _encode(values: dict[str, Any]) -> bytes:
    try:
        return json.dumps(values, ensure_ascii=False, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"a setting must be a JSON value: {e}") from e


def _make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each made durable in its parent."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        fsync_dir(directory.parent)


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

    def _remember(self, user: str, stamp: _Stamp | None, values: dict[str, Any]) -> None:
        self._cache[user] = (stamp, values)
        self._cache.move_to_end(user)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)

    def get(self, user: str, key: str) -> object:
        user = user.lower()
        path = self.path(user)
        stamp = _stamp(path)
        cached = self._cache.get(user)
        if cached is not None and cached[0] == stamp:
            self._cache.move_to_end(user)
            values = cached[1]
        else:
            try:
                values = _read(path)
            except UnreadableSettings as e:  # not remembered: tried again next time
                log.warn("settings of {user} unreadable: {error}", user=user, error=e)
                return None
            self._remember(user, stamp, values)
        return copy.deepcopy(values.get(key))

    def set(self, user: str, key: str, value: object) -> Deferred[None]:
        if not key or len(key) > MAX_KEY:
            raise ValueError(f"bad settings key {key!r}")
        _encode({key: value})
        user = user.lower()
        value = copy.deepcopy(value)
        path = self.path(user)

        def update() -> tuple[_Stamp | None, dict[str, Any]]:
            """Read, change and replace the file under the user's lock (in a thread)."""
            _make_dirs(path.parent)
            fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                values = _read(path)
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
                data = _encode(values)
                if len(data) > MAX_BYTES:
                    raise ValueError(f"the settings of {user} would exceed {MAX_BYTES} bytes")
                write_atomic(path, data)
                return _stamp(path), values
            finally:
                os.close(fd)  # releases the flock

        def stored(result: tuple[_Stamp | None, dict[str, Any]]) -> None:
            self._remember(user, *result)

        lock = self._locks.setdefault(user, DeferredLock())

        def released(result: object) -> object:
            if not lock.locked and not lock.waiting:
                self._locks.pop(user, None)
            return result

        d: Deferred[None] = lock.run(lambda: deferToThread(update).addCallback(stored))
        return d.addBoth(released)
