"""A folder's messages by UID, as the journal's fold holds them.

A folder of 100,000 messages loaded from its checkpoint (``checkpoint.py``) must answer its
first request in milliseconds, yet making 100,000 :class:`Entry` objects costs a tenth of a
second or more.  So the table keeps a checkpoint's messages as columns (arrays of numbers and
two byte strings) and makes an Entry only when one is asked for; messages added after the
checkpoint, and those already asked for, are plain objects in dictionaries.  Without a
checkpoint the columns are empty and the table is a dictionary with a few more steps.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Iterator, KeysView, MutableMapping
from itertools import accumulate, compress
from typing import Any

import attrs

#: ``Entry.info`` in a checkpoint's info column for a file name without a ``:2,`` part.
NO_INFO = "~"


@attrs.define(slots=True)
class Entry:
    uid: int
    base: str
    sub: str
    #: Maildir info flag letters, or None when the file name has no ``:2,`` part.
    info: str | None
    modseq: int
    size: int
    date: float

    @property
    def filename(self) -> str:
        return self.base if self.info is None else f"{self.base}:2,{self.info}"


@attrs.frozen
class Columns:
    """Messages as columns, in ascending UID order (row ``i`` is message ``uids[i]``)."""

    uids: array[int]
    modseqs: array[int]
    sizes: array[int]
    dates: array[float]
    #: One byte a message: ``n`` (in ``new/``) or ``c`` (in ``cur/``).
    subs: bytes
    #: The base names, each followed by a newline; ``base_ends[i]`` is the length of the
    #: first ``i + 1`` names (without their newlines), so row i's ends at ``base_ends[i] + i``.
    bases: bytes
    base_ends: array[int]
    #: The info letters (``~``: none), likewise.
    infos: bytes
    info_ends: array[int]

    def __len__(self) -> int:
        return len(self.uids)

    def row(self, uid: int) -> int:
        """The row of ``uid``, or -1."""
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else -1

    def entry(self, i: int) -> Entry:
        b0 = self.base_ends[i - 1] + i if i else 0
        i0 = self.info_ends[i - 1] + i if i else 0
        info = self.infos[i0 : self.info_ends[i] + i].decode("utf-8")
        return Entry(
            self.uids[i],
            self.bases[b0 : self.base_ends[i] + i].decode("utf-8"),
            "new" if self.subs[i] == 0x6E else "cur",
            None if info == NO_INFO else info,
            self.modseqs[i],
            self.sizes[i],
            self.dates[i],
        )

    @classmethod
    def of(cls, entries: list[Entry]) -> Columns:
        """The columns of ``entries`` (ascending UIDs)."""
        return cls.of_lists(
            [e.uid for e in entries],
            [e.modseq for e in entries],
            [e.size for e in entries],
            [e.date for e in entries],
            [_sub_byte(e.sub) for e in entries],
            [e.base.encode("utf-8") for e in entries],
            [_info_bytes(e.info) for e in entries],
        )

    @classmethod
    def of_lists(
        cls,
        uids: list[int],
        modseqs: list[int],
        sizes: list[int],
        dates: list[float],
        subs: list[int],
        bases: list[bytes],
        infos: list[bytes],
    ) -> Columns:
        """Columns from one list per field (base names and infos encoded, without newlines)."""
        return cls(
            array("q", uids),
            array("q", modseqs),
            array("q", sizes),
            array("d", dates),
            bytes(subs),
            b"\n".join(bases) + b"\n" if bases else b"",
            array("q", accumulate(map(len, bases))),
            b"\n".join(infos) + b"\n" if infos else b"",
            array("q", accumulate(map(len, infos))),
        )

    def lists(self) -> tuple[list[int], list[int], list[int], list[float], list[int],
                             list[bytes], list[bytes]]:  # fmt: skip
        """The fields as :meth:`of_lists` takes them."""
        return (
            self.uids.tolist(),
            self.modseqs.tolist(),
            self.sizes.tolist(),
            self.dates.tolist(),
            list(self.subs),
            self.bases.split(b"\n")[:-1],
            self.infos.split(b"\n")[:-1],
        )


def _sub_byte(sub: str) -> int:
    return 0x6E if sub == "new" else 0x63


def _info_bytes(info: str | None) -> bytes:
    return (NO_INFO if info is None else info).encode("utf-8")


_MISSING = object()


class _Keys(KeysView[int]):
    """The UIDs of an :class:`EntryTable`: set operations through one C-made set, not a
    Python loop over the table."""

    _mapping: EntryTable

    def _set(self) -> set[int]:
        return set(self._mapping.uid_list())

    def __and__(self, other: Iterable[Any]) -> set[int]:
        return self._set() & set(other)

    def __rand__(self, other: Iterable[Any]) -> set[int]:  # type: ignore[override]
        return set(other) & self._set()

    def __sub__(self, other: Iterable[Any]) -> set[int]:
        return self._set() - set(other)

    def __rsub__(self, other: Iterable[Any]) -> set[int]:  # type: ignore[override]
        return set(other) - self._set()


class EntryTable(MutableMapping[int, Entry]):
    """UID -> :class:`Entry`, iterated in ascending UID order.

    New UIDs must be added in ascending order, above every UID of the columns (the journal's
    ``+`` lines ascend).  An Entry handed out is kept, so a change made to it stays.
    """

    def __init__(self, columns: Columns | None = None) -> None:
        self._columns = columns
        #: Entries of the columns asked for so far (and so perhaps changed).
        self._made: dict[int, Entry] = {}
        #: UIDs of the columns that are gone.
        self._gone: set[int] = set()
        #: Entries added after the columns, in ascending UID order.
        self._added: dict[int, Entry] = {}

    def _row(self, uid: int) -> int:
        if self._columns is None or uid in self._gone:
            return -1
        return self._columns.row(uid)

    def get(self, uid: int, default: Entry | None = None) -> Entry | None:  # type: ignore[override]
        if not isinstance(uid, int):
            return default
        entry = self._added.get(uid) or self._made.get(uid)
        if entry is not None:
            return entry
        i = self._row(uid)
        if i < 0:
            return default
        assert self._columns is not None
        entry = self._made[uid] = self._columns.entry(i)
        return entry

    def __getitem__(self, uid: int) -> Entry:
        entry = self.get(uid)
        if entry is None:
            raise KeyError(uid)
        return entry

    def __contains__(self, uid: object) -> bool:
        if not isinstance(uid, int):
            return False
        return uid in self._added or uid in self._made or self._row(uid) >= 0

    def __setitem__(self, uid: int, entry: Entry) -> None:
        if uid in self._made or self._row(uid) >= 0:
            self._made[uid] = entry
        else:
            self._added[uid] = entry

    def __delitem__(self, uid: int) -> None:
        if self._added.pop(uid, None) is None:
            if self._row(uid) < 0:
                raise KeyError(uid)
            self._gone.add(uid)
            self._made.pop(uid, None)

    def pop(self, uid: int, default: object = _MISSING) -> Entry | None:  # type: ignore[override]
        entry = self.get(uid)
        if entry is None:
            if default is _MISSING:
                raise KeyError(uid)
            return default  # type: ignore[return-value]
        del self[uid]
        return entry

    def __len__(self) -> int:
        columns = 0 if self._columns is None else len(self._columns) - len(self._gone)
        return columns + len(self._added)

    def uid_list(self) -> list[int]:
        """The UIDs present, ascending (a fresh list)."""
        uids = [] if self._columns is None else self._columns.uids.tolist()
        if self._gone:
            gone = self._gone
            uids = [u for u in uids if u not in gone]
        uids.extend(self._added)
        return uids

    def __iter__(self) -> Iterator[int]:
        return iter(self.uid_list())

    def keys(self) -> _Keys:
        return _Keys(self)

    def base_index(self) -> dict[str, int]:
        """Base name -> UID of every message, without making an Entry for each."""
        index: dict[str, int] = {}
        c = self._columns
        if c is not None:
            names = c.bases.decode("utf-8").split("\n")[:-1]
            index = dict(zip(names, c.uids, strict=True))
            if self._gone:
                index = {b: u for b, u in index.items() if u not in self._gone}
        index.update((e.base, u) for u, e in self._added.items())
        return index

    def values_of(self, field: str) -> list[float]:
        """Each message's ``date`` or ``size``, in ascending UID order, without making an
        Entry for every message."""
        if self._columns is None:
            values: list[float] = []
        else:
            column = self._columns.dates if field == "date" else self._columns.sizes
            values = [
                getattr(self._made[u], field) if u in self._made else column[i]
                for i, u in enumerate(self._columns.uids)
                if u not in self._gone
            ]
        values.extend(getattr(e, field) for e in self._added.values())
        return values

    def columns(self) -> Columns:
        """Every message as columns (for a checkpoint), without making an Entry for each."""
        c = self._columns
        if c is None:
            return Columns.of(list(self._added.values()))
        if not self._made and not self._gone and not self._added:
            return c
        uids, modseqs, sizes, dates, subs, bases, infos = c.lists()
        for uid, e in self._made.items():
            i = c.row(uid)
            modseqs[i], sizes[i], dates[i] = e.modseq, e.size, e.date
            subs[i], infos[i] = _sub_byte(e.sub), _info_bytes(e.info)
        fields = (uids, modseqs, sizes, dates, subs, bases, infos)
        if self._gone:
            keep = [u not in self._gone for u in uids]
            fields = tuple(list(compress(f, keep)) for f in fields)  # type: ignore[assignment]
        added = Columns.of(list(self._added.values())).lists()
        for field, more in zip(fields, added, strict=True):
            field.extend(more)  # type: ignore[attr-defined]
        return Columns.of_lists(*fields)
