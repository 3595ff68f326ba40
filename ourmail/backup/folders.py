"""A mailbox's Maildir folders into a snapshot, as they were at one moment under their locks.

Under a folder's lock (``ourmail-uidlist.lock``, held by every change the store makes) its
state is fixed: the names in ``new/`` and ``cur/``, the journal and the summary caches
(append-only files: their length then, read later from descriptors opened then, so a
compaction replacing them meanwhile does not matter), the keywords and UIDVALIDITY files.
The locks of all the folders of a mailbox are held together for that moment, so a message
moved between them (IMAP MOVE) is in one of them in the snapshot, never in neither.
The locks are released before the messages are copied: a message file never changes except
its name (a flag change renames ``base:2,S`` to ``base:2,FS``), so a file renamed meanwhile is
found by its base name and stored under the name it had at the locked moment.  A file
expunged (or moved away) meanwhile cannot be copied any more: then the folders are taken
again, and this time the few messages still missing are copied with the locks held, so the
snapshot is exactly the folders at that second moment.  The checkpoint ``ourmail-index`` is
left out: it names the journal's inode, which a restore changes, so it would be set aside
anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ourmail.backup.writer import SnapshotWriter, key_of
from ourmail.store import cache, checkpoint, maildir
from ourmail.store.folder import LOCKFILE, UIDLIST, VALIDITY

#: Append-only files copied as long as they were at the locked moment.
APPEND_ONLY = (UIDLIST, cache.FILE_NAME, cache.SEARCH_FILE)
#: Small files replaced whole, read under the lock.
SMALL = (maildir.KEYWORDS, VALIDITY)
#: The entries of a folder this module takes care of (the rest is copied like any file).
HANDLED = frozenset((*APPEND_ONLY, *SMALL, LOCKFILE, checkpoint.FILE_NAME, "new", "cur", "tmp"))


def is_folder(path: Path) -> bool:
    """A Maildir folder (the INBOX or a Maildir++ subfolder): it has ``cur/``."""
    return (path / "cur").is_dir()


def lock_fd(path: Path) -> int:
    """A descriptor of the lock file ``path`` to flock.  Created if missing, then owned like
    its folder: a backup run as root must not leave a lock file the server cannot open."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.geteuid() == 0:
            st = os.stat(path.parent)
            os.fchown(fd, st.st_uid, st.st_gid)
        return fd


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """The exclusive flock(2) on the lock file ``path``, as the store, vault and queue take it."""
    fd = lock_fd(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Moment:
    """What a folder held at the locked moment."""

    def __init__(self, folder: Path) -> None:
        #: base name -> (sub folder, file name)
        self.messages: dict[str, tuple[str, str]] = {}
        for sub in ("new", "cur"):
            with os.scandir(folder / sub) as it:
                for de in it:
                    if not de.name.startswith("."):
                        self.messages[maildir.split_name(de.name)[0]] = (sub, de.name)
        self.open: dict[str, tuple[int, int, int]] = {}  # name -> (fd, size, mode)
        for name in APPEND_ONLY:
            try:
                fd = os.open(folder / name, os.O_RDONLY)
            except FileNotFoundError:
                continue
            st = os.fstat(fd)
            self.open[name] = (fd, st.st_size, st.st_mode)
        self.small: dict[str, tuple[bytes, int]] = {}
        for name in SMALL:
            try:
                with open(folder / name, "rb") as f:
                    self.small[name] = (f.read(), os.fstat(f.fileno()).st_mode)
            except FileNotFoundError:
                continue

    def store(self, writer: SnapshotWriter, rel: str) -> None:
        """Write the journal, caches and small files (and close the descriptors)."""
        try:
            for name, (fd, size, mode) in self.open.items():
                writer.put_fd(f"{rel}/{name}", fd, size, mode)
        finally:
            self.close()
        for name, (data, mode) in self.small.items():
            writer.put_bytes(f"{rel}/{name}", data, mode)

    def close(self) -> None:
        for fd, _, _ in self.open.values():
            os.close(fd)
        self.open = {}


class _Finder:
    """A message's file now, whatever its flags: one scan of the folder answers every file
    renamed by the same change (marking 10,000 messages read renames them in one go)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.now: dict[str, Path] = {}

    def find(self, base: str) -> Path | None:
        path = self.now.get(base)
        if path is not None and path.exists():
            return path
        self.now = {}
        for sub in ("cur", "new"):
            try:
                with os.scandir(self.folder / sub) as it:
                    for de in it:
                        self.now[maildir.split_name(de.name)[0]] = Path(de.path)
            except FileNotFoundError:
                return None  # the folder was deleted or renamed
        return self.now.get(base)


def _copy_message(
    writer: SnapshotWriter, finder: _Finder, rel: str, base: str, sub: str, name: str
) -> bool:
    """The message ``base`` as ``rel/sub/name``; False if it is gone (expunged)."""
    key = key_of(f"{rel}/{sub}/{name}")
    if writer.put_path(f"{rel}/{sub}/{name}", finder.folder / sub / name, key):
        return True
    moved = finder.find(base)  # renamed for a flag change since the locked moment
    return moved is not None and writer.put_path(f"{rel}/{sub}/{name}", moved, key)


def copy_folders(writer: SnapshotWriter, group: list[tuple[Path, str]]) -> set[Path]:
    """Copy the Maildir folders ``group`` (path, place in the snapshot) of one mailbox into the
    snapshot, all as they were at one moment: their locks are taken together (in path order;
    the store never holds two at once, so this cannot deadlock with it).  A message moved
    between two of them (IMAP MOVE: added to one, then expunged from the other) is then in
    one, or in both as in the middle of a move, never in neither.  The folders copied (one
    deleted or renamed meanwhile is left out)."""
    moments = _take(group)
    gone: dict[Path, set[str]] = {}
    try:
        for folder, rel, mode, moment in moments:
            for sub in ("new", "cur", "tmp"):
                writer.mkdir(f"{rel}/{sub}")
            writer.dirs[rel] = mode & 0o7777
            moment.store(writer, rel)
            finder = _Finder(folder)
            gone[folder] = {
                base
                for base, (sub, name) in moment.messages.items()
                if not _copy_message(writer, finder, rel, base, sub, name)
            }
    finally:
        for *_, moment in moments:
            moment.close()  # those not stored yet, after a failure
    dropped = _again(writer, moments, gone) if any(gone.values()) else set()
    return {folder for folder, _, _, _ in moments} - dropped


def _take(group: list[tuple[Path, str]]) -> list[tuple[Path, str, int, _Moment]]:
    """Each folder of ``group`` still there: its mode and what it held, all at one moment."""
    moments: list[tuple[Path, str, int, _Moment]] = []
    with contextlib.ExitStack() as locks:
        try:
            for folder, rel in sorted(group):
                try:
                    mode = os.stat(folder).st_mode
                    locks.enter_context(locked(folder / LOCKFILE))
                    moments.append((folder, rel, mode, _Moment(folder)))
                except FileNotFoundError:
                    continue
        except BaseException:
            for *_, moment in moments:
                moment.close()
            raise
    return moments


def _again(
    writer: SnapshotWriter,
    moments: list[tuple[Path, str, int, _Moment]],
    gone: dict[Path, set[str]],
) -> set[Path]:
    """Messages expunged (or moved away) since the moment: take the folders again, all
    together, and copy what is still missing with the locks held, so nothing can go before
    it is copied; the snapshot is then the folders at that second moment (one deleted
    meanwhile is taken back out, and returned)."""
    dropped: set[Path] = set()
    with contextlib.ExitStack() as locks:
        for folder, rel, _, moment in moments:
            try:
                locks.enter_context(locked(folder / LOCKFILE))
                again = _Moment(folder)
            except FileNotFoundError:
                dropped.add(folder)
                for inside in [f for f in writer.files if f.startswith(f"{rel}/")]:
                    writer.drop(inside)
                for inside in [d for d in writer.dirs if d == rel or d.startswith(f"{rel}/")]:
                    del writer.dirs[inside]
                continue
            try:
                missing = gone[folder]
                for base, (sub, name) in moment.messages.items():
                    if base in missing:
                        continue
                    now = again.messages.get(base)
                    if now is None:
                        writer.drop(f"{rel}/{sub}/{name}")
                    elif now != (sub, name):
                        writer.rename(f"{rel}/{sub}/{name}", f"{rel}/{now[0]}/{now[1]}")
                for base, (sub, name) in again.messages.items():
                    if base in missing or base not in moment.messages:
                        writer.put_path(f"{rel}/{sub}/{name}", folder / sub / name)
                again.store(writer, rel)
            finally:
                again.close()
    return dropped
