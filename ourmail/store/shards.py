"""Shards: which volume holds a user's mail.

A user's shard is the first byte of sha256 of the lower-cased address (256 virtual shards);
``<data>/shards.toml`` maps shard ranges to roots, so shards can move between volumes without
rehashing anyone.  The user's Maildir is ``<root>/<NN>/<domain>/<localpart>/``.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from ourmail.config import ConfigError

FILE_NAME = "shards.toml"
DEFAULT_ROOT = "mail"

DEFAULT_SHARDS_TOML = f"""\
# Maps the 256 shards (first byte of sha256 of the lower-cased address, 00-ff) to the folders
# or volumes that hold them.  Relative roots are under the data directory.
[[shard]]
range = "00-ff"
root = "{DEFAULT_ROOT}"
"""


def local_dir(local: str) -> str:
    """A local part as a directory name: one component, and different local parts differ."""
    return local.replace("%", "%25").replace("/", "%2F")


def shard_of(address: str) -> int:
    """The shard number (0-255) of an address."""
    return hashlib.sha256(address.lower().encode("utf-8")).digest()[0]


class ShardMap:
    """The shard -> root table from ``shards.toml`` (all shards in ``<data>/mail`` if absent)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.roots: list[Path] = [data_dir / DEFAULT_ROOT] * 256
        path = data_dir / FILE_NAME
        if path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            table = tomllib.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: {e}") from e
        seen = [False] * 256
        entries = table.get("shard", [])
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: 'shard' must be a list of [[shard]] tables")
        for entry in entries:
            try:
                first, _, last = entry["range"].partition("-")
                lo, hi = int(first, 16), int(last or first, 16)
                root = Path(entry["root"])
            except (KeyError, ValueError, AttributeError, TypeError) as e:
                raise ConfigError(f"{path}: bad [[shard]] entry {entry!r}") from e
            if not 0 <= lo <= hi <= 255:
                raise ConfigError(f"{path}: shard range out of 00-ff: {entry['range']!r}")
            for n in range(lo, hi + 1):
                self.roots[n] = root if root.is_absolute() else self.data_dir / root
                seen[n] = True
        if not all(seen):
            missing = [f"{n:02x}" for n, ok in enumerate(seen) if not ok]
            raise ConfigError(f"{path}: shards without a root: {', '.join(missing[:8])}…")

    def user_dir(self, address: str) -> Path:
        """The Maildir of a normalised ``local@domain`` address.

        The local part becomes one path component: ``/`` (legal in RFC 5321 local parts) and
        ``%`` are percent-encoded, so ``alice/.Sent`` can never land inside alice's Maildir.
        """
        local, _, domain = address.rpartition("@")
        n = shard_of(address)
        return self.roots[n] / f"{n:02x}" / domain / local_dir(local)
