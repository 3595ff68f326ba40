"""What ``/healthz`` checks (docs/metrics.md#healthz): the listeners listen, and the data
folder can be written to.  Cheap enough for a probe every second: two system calls, no file
written and no fsync."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol


class Listening(Protocol):
    """A listener as service.py keeps it: ``port`` is None until it listens."""

    @property
    def port(self) -> object | None:
        """The listening port, or None."""


class Health:
    """The health of one server process."""

    def __init__(self, data_dir: Path, listeners: Mapping[str, Listening]) -> None:
        self.data_dir = data_dir
        #: Filled in by service.py as it makes the listeners (it may still grow after this).
        self.listeners = listeners

    def problem(self) -> str | None:
        """A short reason the server is not healthy, or None when it is.  It names only
        services and the data folder's state: nothing secret."""
        down = sorted(name for name, listener in self.listeners.items() if listener.port is None)
        if down:
            return "not listening: " + ", ".join(down)
        # access(2) also says EROFS for a read-only mount.
        if not os.access(self.data_dir, os.W_OK | os.X_OK):
            return "data folder not writable"
        try:
            space = os.statvfs(self.data_dir)
        except OSError:
            return "data folder not readable"
        # Filesystems without an inode table (btrfs) say 0 inodes in all: only blocks count.
        if space.f_bavail == 0 or (space.f_files and space.f_favail == 0):
            return "data folder full"
        return None
