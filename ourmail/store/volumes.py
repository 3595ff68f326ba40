"""The volumes that hold the mail: free and total bytes per shard root (docs/metrics.md).

Implementation notes (keep these true when changing this module):

* A volume is a distinct shard root of ``shards.toml`` (:class:`~ourmail.store.shards.ShardMap`),
  named by its path and the shard ranges it holds (``00-7f,c0-ff``), plus the data folder
  itself (the queue, the accounts, the vault by default), whose ``shards`` is empty; the data
  folder is left out when a shard root is on its filesystem (the default ``<data>/mail``).
  The labels come from the configuration, never from traffic.
* :func:`measure` calls ``statvfs(2)``, which can hang on a network filesystem: callers run
  it in a thread, never on the reactor (``service.py`` does it every
  :data:`MEASURE_INTERVAL` seconds and ``/metrics`` reads the last figures).
* Free bytes are those an unprivileged process may use (``f_bavail``): the blocks reserved
  for root are not free for the server's user.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import attrs

from ourmail.store.shards import ShardMap

#: Seconds between two measurements of the volumes.
MEASURE_INTERVAL = 30.0


@attrs.frozen
class Volume:
    """A folder that holds shards (or the data folder): ``shards`` is like ``00-7f,c0-ff``."""

    root: Path
    shards: str


@attrs.frozen
class Usage:
    """A volume's space at one moment, in bytes; None where it could not be measured."""

    volume: Volume
    free: int | None
    size: int | None


def ranges(numbers: Iterable[int]) -> str:
    """Shard numbers as compact hexadecimal ranges: ``[0, 1, 2, 5]`` -> ``00-02,05``."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(set(numbers)):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(_range(run))
        run = [n]
    if run:
        out.append(_range(run))
    return ",".join(out)


def _range(run: list[int]) -> str:
    return f"{run[0]:02x}" if len(run) == 1 else f"{run[0]:02x}-{run[-1]:02x}"


def volumes(data_dir: Path) -> list[Volume]:
    """The data folder and each distinct shard root of ``<data_dir>/shards.toml``, in the
    order of their first shard (raises ConfigError for a bad ``shards.toml``)."""
    by_root: dict[Path, list[int]] = {}
    for n, root in enumerate(ShardMap(data_dir).roots):
        by_root.setdefault(root, []).append(n)
    found = [Volume(root, ranges(numbers)) for root, numbers in by_root.items()]
    if data_dir not in by_root:
        found.insert(0, Volume(data_dir, ""))
    return found


def measure(volume: Volume) -> Usage:
    """``volume``'s free and total bytes (blocking: ``statvfs``; run it in a thread).  A root
    that does not exist yet (no mail delivered there) or cannot be read gives None."""
    try:
        st = os.statvfs(volume.root)
    except OSError:
        return Usage(volume, None, None)
    return Usage(volume, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def _device(path: Path) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def measure_all(found: Iterable[Volume]) -> list[Usage]:
    """:func:`measure` of each volume (blocking), leaving out the data folder when a shard
    root is on the same filesystem (its figures would be the same twice)."""
    found = list(found)
    roots = {_device(v.root) for v in found if v.shards} - {None}
    return [measure(v) for v in found if v.shards or _device(v.root) not in roots]
