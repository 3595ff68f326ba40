"""Durable file operations: the building blocks of "nothing acknowledged is ever lost"."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename or create inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync a file's data and metadata."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    data: bytes,
    mode: int = 0o600,
    before_rename: Callable[[int], None] | None = None,
) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole.

    Writes a sibling temporary file, fsyncs it, renames it over ``path`` and fsyncs the directory.
    ``before_rename`` is called with the new file's inode (which the rename keeps) just before.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        inode = os.fstat(fd).st_ino
    finally:
        os.close(fd)
    if before_rename is not None:
        before_rename(inode)
    os.replace(tmp, path)
    fsync_dir(path.parent)


_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)
#: True where one syncfs(2) call can make a whole batch of files durable (Linux).
HAVE_SYNCFS = _syncfs is not None


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush every written file and directory entry of the filesystem holding ``path``.

    Group commit: after a batch of messages is written and renamed into place, one call makes all
    of them durable.  Since Linux 5.8 syncfs reports write-back errors, which are raised here.
    """
    assert _syncfs is not None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)
