"""One Maildir folder into a snapshot, as it was at one moment under the folder lock.

Under the folder's lock (``ourmail-uidlist.lock``, held by every change the store makes) the
folder's state is fixed: the names in ``new/`` and ``cur/``, the journal and the summary
caches (append-only files: their length then, read later from descriptors opened then, so a
compaction replacing them meanwhile does not matter), the keywords and UIDVALIDITY files.
The lock is released before the messages are copied: a message file never changes except its
name (a flag change renames ``base:2,S`` to ``base:2,FS``), so a file renamed meanwhile is
found by its base name and stored under the name it had at the locked moment.  A file
expunged meanwhile cannot be copied any more: then the folder is taken again, and this time
the few messages still missing are copied with the lock held, so the snapshot is exactly the
folder at that second moment.  The checkpoint ``ourmail-index`` is left out: it names the
journal's inode, which a restore changes, so it would be set aside anyway.
"""

from __future__ import annotations

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
            with os.scandir(self.folder / sub) as it:
                for de in it:
                    self.now[maildir.split_name(de.name)[0]] = Path(de.path)
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


def copy_folder(writer: SnapshotWriter, folder: Path, rel: str) -> bool:
    """Copy the Maildir folder at ``folder`` into the snapshot at ``rel``; False if the folder
    went away meanwhile (deleted or renamed: left out)."""
    try:
        mode = os.stat(folder).st_mode
        with locked(folder / LOCKFILE):
            moment = _Moment(folder)
    except FileNotFoundError:
        return False
    for sub in ("new", "cur", "tmp"):
        writer.mkdir(f"{rel}/{sub}")
    writer.dirs[rel] = mode & 0o7777
    moment.store(writer, rel)
    finder = _Finder(folder)
    gone = [
        base
        for base, (sub, name) in moment.messages.items()
        if not _copy_message(writer, finder, rel, base, sub, name)
    ]
    if not gone:
        return True
    # Expunged since the locked moment: take the folder again, and copy what is still
    # missing with the lock held, so nothing can go before it is copied.
    try:
        with locked(folder / LOCKFILE):
            again = _Moment(folder)
            try:
                for base, (sub, name) in moment.messages.items():
                    if base in gone:
                        continue
                    now = again.messages.get(base)
                    if now is None:
                        writer.drop(f"{rel}/{sub}/{name}")
                    elif now != (sub, name):
                        writer.rename(f"{rel}/{sub}/{name}", f"{rel}/{now[0]}/{now[1]}")
                for base, (sub, name) in again.messages.items():
                    if base in gone or base not in moment.messages:
                        writer.put_path(f"{rel}/{sub}/{name}", folder / sub / name)
                again.store(writer, rel)
            finally:
                again.close()
    except FileNotFoundError:
        return False
    return True
