"""A small cache whose entries expire after their own time to live, bounded in size."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """At most ``size`` entries; the least recently used one goes first when full, and an
    entry is gone once its time to live has passed (times are the caller's clock)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> tuple[bool, V | None]:
        """(True, value) for a live entry, else (False, None)."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if expires <= now:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: K, value: V, ttl: float, now: float) -> None:
        """Keep ``value`` for ``ttl`` seconds (nothing is kept for a TTL of zero or less)."""
        if ttl <= 0 or self.size <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (now + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
