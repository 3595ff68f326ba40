"""Moving shards between roots while the server runs, and reporting what each root holds.

The mover (``ourmail shard move``) and the servers coordinate through files in the data
directory only, so it works across processes:

1. the mover writes ``shards.moving`` (the shards and its PID);
2. every store write checks that marker while holding its folder's lock and, for a moving
   shard, fails with :class:`~ourmail.interfaces.ShardMoving` (a temporary failure: SMTP 451,
   IMAP ``NO [UNAVAILABLE]``); reads go on from the old place;
3. the mover copies each folder while holding the same lock, so a write either finished before
   the copy or was refused; every copied file and directory is fsynced and counted;
4. ``shards.toml`` is replaced atomically to point at the new root, the marker is removed, and
   only then are the old copies deleted.

A crash before step 4 leaves the old copy in charge (the partial new one is removed by the next
attempt); a crash after it leaves the old copy on disk, unused, to be deleted by hand.  A
marker whose mover is no longer running is ignored, so a crashed move never blocks mail.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import attrs

from ourmail.config import ConfigError
from ourmail.fsutil import fsync_dir, fsync_file, write_atomic
from ourmail.store import faults
from ourmail.store.shards import FILE_NAME, ShardMap

MARKER = "shards.moving"
LOCKFILE = "ourmail-uidlist.lock"


class MoveError(Exception):
    """The move cannot be done; the message says why."""


class MovingShards:
    """Server side: which shards are being moved right now (re-read when the marker changes)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / MARKER
        self._stamp: tuple[int, int] | None = None
        self._moving: frozenset[int] = frozenset()

    def moving(self) -> frozenset[int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._moving = None, frozenset()
            return self._moving
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            self._stamp, self._moving = stamp, _read_marker(self.path)
        return self._moving


def _read_marker(path: Path) -> frozenset[int]:
    try:
        data = json.loads(path.read_text())
        pid, shards = int(data["pid"]), frozenset(int(n) for n in data["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return frozenset()  # the mover died: its marker no longer means anything
    except PermissionError:
        pass
    return shards


def parse_range(text: str) -> tuple[int, int]:
    """``00-7f`` or ``1a`` -> (first, last) shard numbers."""
    first, _, last = text.partition("-")
    try:
        lo, hi = int(first, 16), int(last or first, 16)
    except ValueError:
        raise MoveError(f"not a shard range: {text!r} (use hex, e.g. 00-7f)") from None
    if not 0 <= lo <= hi <= 255:
        raise MoveError(f"shard range out of 00-ff: {text!r}")
    return lo, hi


@attrs.frozen
class RootReport:
    root: Path
    shards: list[int]
    users: int
    bytes: int


def report(data_dir: Path, sizes: bool = True) -> list[RootReport]:
    """Users and bytes per root, for ``ourmail shard list`` and the admin console (which may
    leave the bytes out: ``sizes=False`` reports 0 without walking every mailbox's files)."""
    shards = ShardMap(data_dir)
    roots: dict[Path, list[int]] = {}
    for n, root in enumerate(shards.roots):
        roots.setdefault(root, []).append(n)
    out = []
    for root, numbers in roots.items():
        users = size = 0
        for n in numbers:
            for user_dir in _user_dirs(root / f"{n:02x}"):
                users += 1
                if sizes:
                    size += _tree_size(user_dir)
        out.append(RootReport(root, numbers, users, size))
    return out


def _user_dirs(shard_dir: Path) -> Iterator[Path]:
    if not shard_dir.is_dir():
        return
    for domain in sorted(shard_dir.iterdir()):
        if domain.is_dir():
            yield from (u for u in sorted(domain.iterdir()) if (u / "cur").is_dir())


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def ranges_text(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> "00-02, 05"."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(f"{start:02x}" if start == n else f"{start:02x}-{n:02x}")
            start = None
    return ", ".join(parts)


def move(data_dir: Path, first: int, last: int, to_root: str) -> int:
    """Move shards ``first``..``last`` to ``to_root``; returns the number of users moved."""
    shards = ShardMap(data_dir)
    target = Path(to_root)
    target_abs = target if target.is_absolute() else data_dir / target
    numbers = [n for n in range(first, last + 1) if shards.roots[n] != target_abs]
    if not numbers:
        raise MoveError("those shards are already on that root")
    marker = data_dir / MARKER
    if _read_marker(marker):
        raise MoveError("another shard move is running")
    target_abs.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(marker, json.dumps({"pid": os.getpid(), "shards": numbers}).encode())
    moved = 0
    try:
        for n in numbers:
            source, dest = shards.roots[n] / f"{n:02x}", target_abs / f"{n:02x}"
            shutil.rmtree(dest, ignore_errors=True)  # a partial copy from a crashed attempt
            for user_dir in list(_user_dirs(source)):
                _copy_user(user_dir, dest / user_dir.parent.name / user_dir.name)
                moved += 1
        faults.point("shard-copied")
        _write_map(data_dir, shards, numbers, target)
        faults.point("shard-switched")
    finally:
        marker.unlink(missing_ok=True)
    for n in numbers:
        shutil.rmtree(shards.roots[n] / f"{n:02x}", ignore_errors=True)
    return moved


def _copy_user(source: Path, dest: Path) -> None:
    """Copy a user's Maildir++: each subfolder, then the INBOX (the user directory itself)."""
    dest.mkdir(parents=True, mode=0o700)
    for entry in sorted(source.iterdir()):
        if entry.is_dir() and (entry / "cur").is_dir():
            _copy_folder(entry, dest / entry.name)
    _copy_folder(source, dest)
    fsync_dir(dest.parent)


def _copy_folder(source: Path, dest: Path) -> None:
    """Copy one folder under its lock: cur/, new/, an empty tmp/ and its files, all fsynced."""
    with open(source / LOCKFILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dest.mkdir(exist_ok=True, mode=0o700)
        for entry in source.iterdir():
            if entry.name in ("cur", "new", "tmp"):
                (dest / entry.name).mkdir(mode=0o700)
                if entry.name != "tmp":
                    names = os.listdir(entry)
                    for name in names:
                        _copy_file(entry / name, dest / entry.name / name)
                    if len(os.listdir(dest / entry.name)) != len(names):
                        raise MoveError(f"the copy of {entry} is incomplete")
                fsync_dir(dest / entry.name)
            elif entry.is_file() and entry.name != LOCKFILE:
                _copy_file(entry, dest / entry.name)
        fsync_dir(dest)


def _copy_file(source: Path, dest: Path) -> None:
    shutil.copy2(source, dest)
    fsync_file(dest)


def _write_map(data_dir: Path, shards: ShardMap, numbers: list[int], target: Path) -> None:
    roots = list(shards.roots)
    for n in numbers:
        roots[n] = target if target.is_absolute() else data_dir / target
    lines = ["# Maps the 256 shards (first byte of sha256 of the lower-cased address) to roots.\n"]
    start = 0
    for n in range(1, 257):
        if n == 256 or roots[n] != roots[start]:
            root = roots[start]
            shown = root.relative_to(data_dir) if root.is_relative_to(data_dir) else root
            lines.append(f'[[shard]]\nrange = "{start:02x}-{n - 1:02x}"\nroot = "{shown}"\n')
            start = n
    text = "".join(lines)
    try:
        tomllib.loads(text)
    except ValueError as e:
        raise ConfigError(f"cannot write {FILE_NAME} for root {target}: {e}") from e
    write_atomic(data_dir / FILE_NAME, text.encode("utf-8"), 0o640)
