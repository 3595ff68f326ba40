"""Writing one snapshot: each file is copied, or hard-linked from the previous snapshot when it
is unchanged (rsync ``--link-dest`` style), so every snapshot is complete on its own while an
incremental run writes only what changed.

Unchanged means: the same path with the same size and sha256 (the source is read to hash it,
but nothing is written), or, for a file that never changes once written (a Maildir message,
a queued message, a sealed vault segment), the same key with the same size, without reading it.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import attrs

from ourmail.backup.manifest import FileEntry, Manifest
from ourmail.store import maildir

CHUNK = 1024 * 1024


@attrs.define
class Counts:
    """What a run did."""

    copied: int = 0
    linked: int = 0
    bytes_copied: int = 0
    bytes_total: int = 0


class SnapshotWriter:
    """Files into ``root`` (the snapshot's ``data/``), linked from ``base`` when unchanged."""

    def __init__(self, root: Path, base: Manifest | None, base_root: Path | None) -> None:
        self.root = root
        self.base = base
        self.base_root = base_root
        self.files: dict[str, FileEntry] = {}
        self.dirs: dict[str, int] = {}
        self.counts = Counts()
        #: key (:func:`key_of`) -> (path in the base, entry), for files that never change.
        self._immutable: dict[str, tuple[str, FileEntry]] = {}
        for rel, entry in self.base_files().items():
            self._immutable[key_of(rel)] = (rel, entry)
        #: Folders known to exist in the snapshot.
        self._made: set[str] = set()

    def base_files(self) -> dict[str, FileEntry]:
        return self.base.files if self.base is not None else {}

    def mkdir(self, rel: str, mode: int = 0o700) -> None:
        """A folder of the snapshot (kept in the manifest, so empty ones are restored)."""
        if rel in self.dirs:
            return
        (self.root / rel).mkdir(parents=True, exist_ok=True)
        self.dirs[rel] = mode & 0o7777

    def _target(self, rel: str) -> Path:
        """Where ``rel`` goes, its folder made, an earlier version from this run removed."""
        path = self.root / rel
        parent = rel.rpartition("/")[0]
        if parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(parent)
        if rel in self.files:
            path.unlink()
        return path

    def _link(self, rel: str, base_rel: str, entry: FileEntry) -> bool:
        assert self.base_root is not None
        target = self._target(rel)
        try:
            os.link(self.base_root / base_rel, target)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EXDEV, errno.EMLINK, errno.EPERM, errno.EOPNOTSUPP):
                return False  # the base changed, another file system, or one without links
            raise
        self.files[rel] = entry
        self.counts.linked += 1
        self.counts.bytes_total += entry.size
        return True

    def put_bytes(self, rel: str, data: bytes, mode: int) -> None:
        """A file with the content ``data``."""
        digest = hashlib.sha256(data).hexdigest()
        entry = FileEntry(len(data), digest, mode & 0o7777)
        old = self.base_files().get(rel)
        if old == entry and self._link(rel, rel, entry):
            return
        target = self._target(rel)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, entry.mode)
        finally:
            os.close(fd)
        self._written(rel, entry)

    def _written(self, rel: str, entry: FileEntry) -> None:
        self.files[rel] = entry
        self.counts.copied += 1
        self.counts.bytes_copied += entry.size
        self.counts.bytes_total += entry.size

    def put_fd(
        self,
        rel: str,
        fd: int,
        size: int,
        mode: int,
        key: str | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        """The first ``size`` octets of the open file ``fd`` (read with pread, so an append
        after the snapshot moment is not taken).  With ``key``: a file that never changes,
        linked from the base file of that key and size without reading it.  ``mtime_ns``:
        the modification time to keep (a message's is its internal date for other tools)."""
        if key is not None:
            hit = self._immutable.get(key)
            same = hit is not None and hit[1].size == size and hit[1].mode == mode & 0o7777
            if same and hit is not None and self._link(rel, hit[0], hit[1]):
                return
        old = self.base_files().get(rel)
        if old is not None and old.size == size and old.mode == mode & 0o7777:
            digest = hashlib.sha256()
            for chunk in _chunks(fd, size):
                digest.update(chunk)
            if digest.hexdigest() == old.sha256 and self._link(rel, rel, old):
                return
        target = self._target(rel)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        digest = hashlib.sha256()
        done = 0
        try:
            for chunk in _chunks(fd, size):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                done += len(chunk)
            os.fchmod(out, mode & 0o7777)
            if mtime_ns is not None:
                os.utime(out, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(out)
        self._written(rel, FileEntry(done, digest.hexdigest(), mode & 0o7777))

    def put_path(self, rel: str, path: Path, key: str | None = None) -> bool:
        """The file at ``path`` as it is now; False if it is gone."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            st = os.fstat(fd)
            self.put_fd(rel, fd, st.st_size, st.st_mode, key, st.st_mtime_ns)
        finally:
            os.close(fd)
        return True

    def rename(self, rel: str, new_rel: str) -> None:
        """Give a file of this snapshot another name."""
        os.rename(self.root / rel, self._target(new_rel))
        self.files[new_rel] = self.files.pop(rel)

    def drop(self, rel: str) -> None:
        """Take a file back out of this snapshot."""
        (self.root / rel).unlink(missing_ok=True)
        self.files.pop(rel, None)


def key_of(rel: str) -> str:
    """How a file that never changes is found in the base: a Maildir message by its folder and
    base name (its flags, in its name, may have changed), anything else by its path."""
    folder, _, name = rel.rpartition("/")
    parent, _, sub = folder.rpartition("/")
    if sub in ("new", "cur"):
        return f"{parent}:{maildir.split_name(name)[0]}"
    return rel


def _chunks(fd: int, size: int) -> Iterator[bytes]:
    """The first ``size`` octets of ``fd`` in chunks (fewer if the file is shorter)."""
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk
