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

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._offsets, self._read_to, self._inode = {}, 0, None
            return
        if st.st_ino != self._inode or st.st_size < self._read_to:
            self._offsets, self._read_to, self._inode = {}, 0, st.st_ino
        if st.st_size == self._read_to:
            return
        with open(self.path, "rb") as f:
            f.seek(self._read_to)
            data = f.read(st.st_size - self._read_to)
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
            with open(self.path, "rb") as f:
                f.seek(where[0])
                return Summary.from_json(f.read(where[1]).decode("utf-8"))
        except (OSError, ValueError, KeyError, UnicodeDecodeError):
            self._offsets.pop(uid, None)
            return None

    def append(self, records: list[tuple[int, Summary]]) -> None:
        """Append summaries (call with the folder lock held)."""
        if not records:
            return
        text = "".join(f"{uid}\t{summary.to_json()}\n" for uid, summary in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)

    def line_count(self) -> int:
        self._refresh()
        return len(self._offsets)
