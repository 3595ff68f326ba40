"""``ourmail-cache``: the per-folder cache of message summaries (ENVELOPE, BODYSTRUCTURE …).

One line per message, ``<uid> TAB <json>``, appended under the folder lock.  A process keeps
only the offset of each UID's line and reads a summary when asked, so a 100,000-message folder
costs a dictionary of offsets, not the summaries.  A line for an expunged UID is ignored; a
corrupt or missing file only means summaries are computed again from the messages.
"""

from __future__ import annotations

import os
from pathlib import Path

from ourmail.mime.summary import Summary

FILE_NAME = "ourmail-cache"


class SummaryCache:
    def __init__(self, folder_path: Path) -> None:
        self.path = folder_path / FILE_NAME
        self._offsets: dict[int, tuple[int, int]] = {}
        self._read_to = 0
        self._inode: int | None = None
        self._fd: int | None = None

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._close()
            self._offsets, self._read_to, self._inode = {}, 0, None
            return
        if st.st_ino != self._inode or st.st_size < self._read_to:
            self._close()
            self._offsets, self._read_to, self._inode = {}, 0, st.st_ino
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        if st.st_size == self._read_to:
            return
        data = os.pread(self._fd, st.st_size - self._read_to, self._read_to)
        pos = 0
        while True:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            tab = data.find(b"\t", pos, end)
            if tab > pos and data[pos:tab].isdigit():
                self._offsets[int(data[pos:tab])] = (self._read_to + tab + 1, end - tab - 1)
            pos = end + 1
        self._read_to += pos

    def get(self, uid: int) -> Summary | None:
        """The cached summary of ``uid``, or None."""
        if uid not in self._offsets:
            self._refresh()
        where = self._offsets.get(uid)
        if where is None:
            return None
        try:
            assert self._fd is not None
            return Summary.from_json(os.pread(self._fd, where[1], where[0]).decode("utf-8"))
        except (OSError, ValueError, KeyError, UnicodeDecodeError):
            self._offsets.pop(uid, None)
            return None

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self._close()

    def append(self, records: list[tuple[int, Summary]]) -> None:
        """Append summaries (call with the folder lock held)."""
        if not records:
            return
        text = "".join(f"{uid}\t{summary.to_json()}\n" for uid, summary in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
