"""Where a message being received waits for its delivery.

Up to ``IN_MEMORY`` bytes it stays in memory: most mail is small, and a message that never
touches a spool file costs the filesystem one file and one rename per recipient instead of four
metadata changes, which keeps group commits short.  A larger message spills into a file under
the spool directory and is hard-linked into the recipients' Maildirs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

#: Messages up to this size are kept in memory while they are received.
IN_MEMORY = 1 << 20


class Spool:
    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / name
        self._buffer: bytearray | None = bytearray()
        self._file: BinaryIO | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._buffer is not None:
            self._buffer += data
            if len(self._buffer) <= IN_MEMORY:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed by discard()
            data, self._buffer = bytes(self._buffer), None
        assert self._file is not None
        self._file.write(data)

    def head(self, limit: int) -> bytes:
        """The first ``limit`` bytes."""
        if self._buffer is not None:
            return bytes(self._buffer[:limit])
        assert self._file is not None
        self._file.flush()
        with open(self.path, "rb") as f:
            return f.read(limit)

    def insert(self, offset: int, data: bytes) -> None:
        """Insert ``data`` at ``offset`` (used to add missing header fields)."""
        self.replace(offset, 0, data)

    def replace(self, offset: int, length: int, data: bytes) -> None:
        """Put ``data`` in place of the ``length`` bytes at ``offset`` (header changes)."""
        if self._buffer is not None:
            self._buffer[offset : offset + length] = data
        else:
            assert self._file is not None
            self._file.flush()
            content = self.path.read_bytes()
            self.path.write_bytes(content[:offset] + data + content[offset + length :])
            self._file.seek(0, os.SEEK_END)
        self.size += len(data) - length

    def source(self) -> bytes | Path:
        """What the store delivers: the bytes, or the spool file's path (flushed)."""
        if self._buffer is not None:
            return bytes(self._buffer)
        assert self._file is not None
        self._file.flush()
        return self.path

    def on_disk(self) -> BinaryIO | None:
        return self._file

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)
            self._file = None
        self._buffer = None
