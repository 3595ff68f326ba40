"""``ourmail-cache``: the per-folder cache of message summaries (envelope, body structure …),
and ``ourmail-search``: the header fields SEARCH looks in most (RFC 3501 §6.4.4 FROM, TO, CC,
BCC, SUBJECT).

``ourmail-cache`` has one line per message, ``<uid> TAB <summary record>``, appended under the
folder lock.  A process keeps only the offset of each UID's line and reads a summary when asked,
so a 100,000-message folder costs a dictionary of offsets, not the summaries.  A line for an
expunged UID is ignored; a corrupt or missing file only means summaries are computed again from
the messages.  So does a line of an older record format (rendered IMAP text, before format 2 of
:class:`~ourmail.mime.summary.Summary`): after an upgrade each message is summarised again the
first time it is asked for, and its new line appended.

``ourmail-search`` has one line per message, ``<uid> US from US to US cc US bcc US subject``
(US is 0x1F), the decoded values lower-cased in UTF-8.  A header search is one ``find`` of the
needle over a memory map of the file, in C, and Python looks only at the lines it hits.  Its
line for a message is written before the cache line, so every UID in ``ourmail-cache`` has one
(a folder from before the search file existed is converted once,
:meth:`SummaryCache.prepare_search`).
"""

from __future__ import annotations

import bisect
import mmap
import os
from array import array
from pathlib import Path

from ourmail.fsutil import write_atomic
from ourmail.mime.summary import Summary
from ourmail.store.checkpoint import CacheOffsets, Mark

FILE_NAME = "ourmail-cache"
SEARCH_FILE = "ourmail-search"
#: The header fields of ``ourmail-search``, in their order on a line.
SEARCH_FIELDS = ("from", "to", "cc", "bcc", "subject")
_US = "\x1f"
#: Bytes of the search file :meth:`SummaryCache.column` reads at a time.
COLUMN_CHUNK = 1 << 20
#: The place of a line found unreadable (no line starts at 0).
_BAD = (0, 0)


def search_line(uid: int, summary: Summary) -> str:
    """The ``ourmail-search`` line of a message."""
    values = [
        summary.headers.get(f, "").lower().replace(_US, " ").replace("\n", " ")
        for f in SEARCH_FIELDS
    ]
    return _US.join([str(uid), *values]) + "\n"


class SummaryCache:
    def __init__(self, folder_path: Path) -> None:
        self.path = folder_path / FILE_NAME
        self.search_path = folder_path / SEARCH_FILE
        #: UID -> (start, length) of its line, for the lines read past ``_base``.
        self._offsets: dict[int, tuple[int, int]] = {}
        #: The offsets of the lines before ``_base.mark``, from the folder's checkpoint.
        self._base: CacheOffsets | None = None
        #: :meth:`known` as of (inode, bytes read, lines past ``_base``).
        self._known: tuple[tuple[int | None, int, int], set[int]] | None = None
        self._read_to = 0
        self._inode: int | None = None
        self._fd: int | None = None
        #: A memory map of the file as far as ``_offsets`` reach: a slice of it is cheaper
        #: than a ``pread`` per summary when a FETCH reads thousands.
        self._map: mmap.mmap | None = None
        #: field -> (inode, bytes read, UID -> value) of the search file (:meth:`column`).
        self._columns: dict[str, tuple[int, int, dict[int, str]]] = {}

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._close()
            self._offsets, self._read_to, self._inode, self._base = {}, 0, None, None
            return
        if st.st_ino != self._inode or st.st_size < self._read_to:
            self._close()
            self._offsets, self._read_to, self._inode, self._base = {}, 0, st.st_ino, None
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

    def _where(self, uid: int) -> tuple[int, int] | None:
        """Where ``uid``'s line lies, as far as the file has been read."""
        where = self._offsets.get(uid)
        base = self._base
        if where is None and base is not None:
            i = bisect.bisect_left(base.uids, uid)
            if i < len(base.uids) and base.uids[i] == uid:
                where = (base.starts[i], base.lengths[i])
        return where

    def get(self, uid: int) -> Summary | None:
        """The cached summary of ``uid``, or None."""
        where = self._where(uid)
        if where is None or where == _BAD:
            self._refresh()
            where = self._where(uid)
            if where is None or where == _BAD:
                return None
        try:
            start, length = where
            return Summary.from_record(self._mapped(start + length)[start : start + length])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeError):
            # A bad line: its UID's next line (after the summary is made again) wins.
            self._offsets[uid], self._known = _BAD, None
            return None

    def adopt(self, base: CacheOffsets, fd: int) -> bool:
        """Take the offsets of a checkpoint that matched the cache file open as ``fd`` (then
        only the lines after them are read), unless this cache has read the file already.
        True if it took them (and ``fd`` with them); the caller closes ``fd`` otherwise."""
        if self._inode is not None:
            return False
        self._close()
        self._fd, self._inode, self._read_to = fd, base.mark.inode, base.mark.offset
        self._offsets, self._base, self._known = {}, base, None
        return True

    def offsets(self) -> CacheOffsets | None:
        """Every UID's line as far as the file goes now (for the folder's checkpoint); None
        when there is no cache file."""
        self._refresh()
        if self._fd is None or self._inode is None:
            return None
        mark = Mark.of(self._fd, self._inode, self._read_to)
        base = self._base
        if base is not None and not self._offsets:
            return CacheOffsets(mark, base.uids, base.starts, base.lengths)
        uids, starts, lengths = (
            (array("q"), array("q"), array("q"))
            if base is None
            else (array("q", base.uids), array("q", base.starts), array("q", base.lengths))
        )
        extra = []
        for uid, (start, length) in self._offsets.items():
            i = bisect.bisect_left(uids, uid)
            if i < len(uids) and uids[i] == uid:
                starts[i], lengths[i] = start, length
            else:
                extra.append(uid)
        if extra:  # new UIDs, mostly above the others: one sort puts them in place
            uids.extend(extra)
            starts.extend(self._offsets[u][0] for u in extra)
            lengths.extend(self._offsets[u][1] for u in extra)
            order = sorted(range(len(uids)), key=uids.__getitem__)
            uids, starts, lengths = (
                array("q", [c[i] for i in order]) for c in (uids, starts, lengths)
            )
        bad = (
            [i for i, length in enumerate(lengths) if not length]
            if _BAD in self._offsets.values()
            else []
        )
        for i in reversed(bad):
            del uids[i], starts[i], lengths[i]
        return CacheOffsets(mark, uids, starts, lengths)

    def _mapped(self, end: int) -> mmap.mmap:
        """The memory map, covering at least ``end`` bytes of the file."""
        if self._map is None or len(self._map) < end:
            assert self._fd is not None
            if self._map is not None:
                self._map.close()
            self._map = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        return self._map

    def _close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self._close()

    def append(self, records: list[tuple[int, Summary]]) -> None:
        """Append summaries (call with the folder lock held): search lines first."""
        if not records:
            return
        with open(self.search_path, "a", encoding="utf-8", errors="replace") as f:
            f.write("".join(search_line(uid, summary) for uid, summary in records))
        data = b"".join(b"%d\t%s\n" % (uid, summary.to_record()) for uid, summary in records)
        with open(self.path, "ab") as f:
            f.write(data)

    def known(self) -> set[int]:
        """The UIDs with a readable summary (and so a search line); the caller must not
        change the set."""
        self._refresh()
        stamp = (self._inode, self._read_to, len(self._offsets))
        if self._known is None or self._known[0] != stamp:
            known = set() if self._base is None else set(self._base.uids)
            for uid, where in self._offsets.items():
                if where == _BAD:
                    known.discard(uid)
                else:
                    known.add(uid)
            self._known = (stamp, known)
        return self._known[1]

    def prepare_search(self) -> None:
        """Make the search file cover every cached summary (call with the folder lock held):
        write it from the summaries if it is missing (a folder from before it existed), remove
        it if it outlived the cache (a :meth:`clear` cut short by a crash)."""
        known = self.known()
        if not known:
            if self.search_path.exists() and self.search_path.stat().st_size:
                self.search_path.unlink()
            return
        if self.search_path.exists():
            return
        lines = []
        for uid in sorted(known):
            summary = self.get(uid)
            if summary is not None:
                lines.append(search_line(uid, summary))
        write_atomic(self.search_path, "".join(lines).encode("utf-8", "replace"))

    def search(self, field: str, needle: str) -> set[int]:
        """UIDs whose ``field`` (one of SEARCH_FIELDS) contains ``needle`` (lower case)."""
        index = SEARCH_FIELDS.index(field) + 1
        want = needle.encode("utf-8")
        try:
            with open(self.search_path, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    return set()
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            return set()
        hits: set[int] = set()
        with data:
            pos = data.find(want)
            while pos >= 0:
                start = data.rfind(b"\n", 0, pos) + 1
                end = data.find(b"\n", pos)
                if end < 0:
                    break  # a line still being written
                fields = data[start:end].split(b"\x1f")
                if len(fields) > index and fields[0].isdigit() and want in fields[index]:
                    hits.add(int(fields[0]))
                pos = data.find(want, end)
        return hits

    def column(self, field: str) -> dict[int, str]:
        """Every UID's value of ``field`` (one of SEARCH_FIELDS) in the search file, for
        sorting a list.  Kept in memory per field and read on incrementally (the file only
        grows until :meth:`clear` replaces it), so after the first call a request costs a
        ``stat`` and the lines added since.  The caller must not change the dictionary."""
        index = SEARCH_FIELDS.index(field) + 1
        try:
            st = os.stat(self.search_path)
        except FileNotFoundError:
            self._columns.pop(field, None)
            return {}
        known = self._columns.get(field)
        if known is None or known[0] != st.st_ino or known[1] > st.st_size:
            known = self._columns[field] = (st.st_ino, 0, {})
        inode, offset, values = known
        if st.st_size > offset:
            with open(self.search_path, "rb") as f:
                f.seek(offset)
                left, held = st.st_size - offset, b""
                while left > 0:  # a MiB at a time: the peak stays small for a large folder
                    chunk = f.read(min(COLUMN_CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    data = held + chunk
                    end = data.rfind(b"\n") + 1  # a torn last line waits for more
                    for line in data[:end].split(b"\n")[:-1]:
                        fields = line.split(b"\x1f")
                        if len(fields) > index and fields[0].isdigit():
                            values[int(fields[0])] = fields[index].decode("utf-8", "replace")
                    offset += end
                    held = data[end:]
            self._columns[field] = (inode, offset, values)
        return values

    def clear(self) -> None:
        """Forget every summary (the UIDs are about to be renumbered; folder lock held).  The
        cache goes first: a search file left alone is then removed by :meth:`prepare_search`."""
        self.path.unlink(missing_ok=True)
        self.search_path.unlink(missing_ok=True)
        self._refresh()
