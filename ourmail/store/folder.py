"""One Maildir folder with IMAP semantics: UIDs, flags, modseqs, summaries, change detection.

Implementation notes (keep these true when changing this module):

* The Maildir files are the truth; the journal (``ourmail-uidlist``, see ``journal.py``) and
  the summary cache (``ourmail-cache``) are caches.  Memory is the fold of the journal: a change
  is made by renaming or writing files and appending journal lines under the folder lock, then
  reading the journal tail, so every process sharing the folder applies the same lines in the
  same order.
* The lock is an exclusive ``flock`` on ``ourmail-uidlist.lock``.  It is held only for file
  renames, unlinks and journal appends, never across fsync of message data and never while a
  protocol writes to a socket.  It is reentrant within one thread of this process.
* Outside changes (a delivery agent writing into ``new/``, mutt or Dovecot renaming a file to
  change flags, a removed file) are noticed because the directories' modification times differ
  from the stamp the last writer recorded; only then is the directory scanned.  With nothing
  changed, :meth:`MaildirFolder.sync` costs three ``stat`` calls.
* Deliveries are group-committed with those of every other folder of the store
  (``committer.py``, through the public :class:`~ourmail.store.committer.Target` methods): one
  worker writes a batch of messages into ``tmp/``, renames them and appends their journal lines
  under each folder's lock, makes the batch durable with one ``syncfs(2)``, and only then are
  the messages acknowledged.
* In-memory state is touched only on the reactor thread; worker threads work on files and on a
  private fold of the journal tail.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import mmap
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence, Set
from pathlib import Path
from typing import Any, Literal

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.fsutil import fsync_dir, fsync_file, write_atomic
from ourmail.interfaces import (
    FlagMode,
    IFolder,
    IStoredMessage,
    MessageSource,
    ShardMoving,
    StoreError,
)
from ourmail.mailflags import canonical_flag
from ourmail.mime.structure import Buffer, to_crlf
from ourmail.mime.summary import Summary, summarize
from ourmail.store import checkpoint, faults, journal, maildir
from ourmail.store.cache import SummaryCache
from ourmail.store.committer import Committer, Placement, Snapshot
from ourmail.store.entrytable import Entry
from ourmail.store.journal import CorruptJournal, FolderState
from ourmail.store.shardmove import MovingShards

UIDLIST = "ourmail-uidlist"
LOCKFILE = "ourmail-uidlist.lock"
KEYWORDS = maildir.KEYWORDS
#: The last UIDVALIDITY given out, so a rebuilt journal always gets a larger one.
VALIDITY = "ourmail-uidvalidity"
#: Messages at least this large are memory-mapped for FETCH instead of read.
MAP_AT = 256 * 1024
#: Messages one worker-thread job reads for a BODY or TEXT search.
SCAN_BATCH = 500
#: Rewrite the journal once it has this many lines more than twice the messages.
COMPACT_SLACK = 5000
#: Write a checkpoint (``checkpoint.py``) of a folder of at least ``CHECKPOINT_MIN`` messages
#: once this many journal lines (or one for every ``CHECKPOINT_SHARE`` messages, if more) were
#: folded since the last: a restart then folds at most that many lines.  A checkpoint of
#: 100,000 messages takes about 0.1 s to write, so that is some 70 µs a line.
CHECKPOINT_LINES = 1024
CHECKPOINT_SHARE = 64
CHECKPOINT_MIN = 2000

log = Logger()

#: Called with (source, target, the messages' files) before a copy or move between folders.
TransferHook = Callable[["MaildirFolder", "MaildirFolder", list[Path]], Deferred[None]]


def _journal_head(path: str) -> bytes:
    """The first line of the journal at ``path`` (empty if it is gone)."""
    try:
        with open(path, "rb") as f:
            return os.pread(f.fileno(), checkpoint.HEAD, 0).split(b"\n", 1)[0]
    except FileNotFoundError:
        return b""


@implementer(IStoredMessage)
class StoredMessage:
    """A message as of the folder's last sync."""

    def __init__(self, folder: MaildirFolder, entry: Entry) -> None:
        self._folder = folder
        self._entry = entry
        self.uid = entry.uid
        self.flags = folder.flags_of(entry.info)
        self.modseq = entry.modseq
        self.size = entry.size
        self.internal_date = entry.date
        self.key = entry.base

    @property
    def path(self) -> Path:
        return self._folder.path / self._entry.sub / self._entry.filename

    def _name(self) -> str:
        """The file's path as a plain string: pathlib costs more than the ``open`` here."""
        return f"{self._folder.root}/{self._entry.sub}/{self._entry.filename}"

    def _open(self) -> int:
        """The message file's descriptor; KeyError if it vanished since the last sync."""
        try:
            return os.open(self._name(), os.O_RDONLY)
        except FileNotFoundError:
            # Renamed by a flag change in another process, or expunged.
            self._folder.sync(force=True)
            entry = self._folder.state.entries.get(self.uid)
            if entry is None:
                raise KeyError(self.uid) from None
            self._entry = entry
            try:
                return os.open(self._name(), os.O_RDONLY)
            except FileNotFoundError:
                raise KeyError(self.uid) from None

    def read(self) -> bytes:
        """The message with CRLF line endings; KeyError if it vanished since the last sync."""
        fd = self._open()
        try:
            return to_crlf(_read_all(fd, self.size))
        finally:
            os.close(fd)

    def buffer(self) -> Buffer:
        """The message with CRLF line endings; a memory map of the file from ``MAP_AT`` bytes
        when the file already has CRLF line endings (it then has exactly ``size`` bytes)."""
        if self.size < MAP_AT:
            return self.read()
        fd = self._open()
        try:
            return _buffer_of(fd, self.size)
        finally:
            os.close(fd)

    def summary(self) -> Summary:
        """Envelope, body structure and search headers, from the cache when present."""
        cached = self._folder.cache.get(self.uid)
        if cached is None:
            cached = summarize(self.read())
            with self._folder._locked():
                self._folder.cache.append([(self.uid, cached)])
        return cached


@implementer(IFolder)
class MaildirFolder:
    """A Maildir (INBOX) or Maildir++ subfolder."""

    def __init__(
        self,
        path: Path,
        name: str,
        shard: int | None = None,
        moving: MovingShards | None = None,
        committer: Committer | None = None,
        before_transfer: TransferHook | None = None,
    ) -> None:
        """``committer`` stores new messages (the store's); a folder opened without one reads
        and changes flags but refuses to store (StoreError).  ``before_transfer`` (the
        store's) is called before messages are copied or moved to another folder, and the
        transfer waits for its Deferred."""
        self.path = path
        self.root = str(path)
        # Checked by every command (sync): joined once, as strings, not a Path per stat.
        self._uidlist_path = os.path.join(self.root, UIDLIST)
        self._keywords_path = os.path.join(self.root, KEYWORDS)
        self._new_path = os.path.join(self.root, "new")
        self._cur_path = os.path.join(self.root, "cur")
        self.name = name
        self.shard = shard
        self._moving = moving
        self._committer = committer
        self._before_transfer = before_transfer
        self.state = FolderState()
        self.cache = SummaryCache(path)
        self._offset = 0
        self._inode: int | None = None
        #: The first line of the journal folded (its generation tells it from a later one).
        self._head = b""
        #: ``state.lines`` at the last checkpoint written or read.
        self._checkpointed = 0
        self._keywords: list[str] = []
        #: info string -> its flags, for the keywords as they are now
        self._flags_of_info: dict[str, frozenset[str]] = {}
        self._keywords_stamp: tuple[int, int] | None = None
        self._listeners: list[Callable[[], None]] = []
        self._lock_owner: int | None = None
        self._sorted: list[int] | None = None
        maildir.clean_tmp(path)
        self.sync()

    # -- attributes ---------------------------------------------------------------------------

    @property
    def uidvalidity(self) -> int:
        return self.state.uidvalidity

    @property
    def uidnext(self) -> int:
        return self.state.uidnext

    @property
    def highestmodseq(self) -> int:
        return self.state.highestmodseq

    @property
    def total_size(self) -> int:
        return self.state.total_size

    # -- locking ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The folder lock, reentrant for the thread that holds it."""
        me = threading.get_ident()
        if self._lock_owner == me:  # the outermost holder releases it
            yield
            return
        fd = os.open(self.path / LOCKFILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_owner = me
            try:
                yield
            finally:
                self._lock_owner = None
        finally:
            os.close(fd)

    # -- reading the journal ------------------------------------------------------------------

    @staticmethod
    def _mtime(path: str) -> int:
        try:
            return os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _check_not_moving(self) -> None:
        """Call with the lock held: refuse writes while ``ourmail shard move`` copies us."""
        if self._moving is not None and self.shard in self._moving.moving():
            raise ShardMoving("this mailbox is being moved; try again in a moment")

    def _dir_stamp(self) -> tuple[int, int]:
        return (self._mtime(self._new_path), self._mtime(self._cur_path))

    def _read_tail(self) -> bool:
        """Apply journal lines added since last time; True if the folder changed."""
        try:
            st = os.stat(self._uidlist_path)
        except FileNotFoundError:
            self._rebuild("missing")
            return True
        reloaded = False
        replaced = st.st_ino != self._inode or st.st_size < self._offset
        if not replaced and st.st_size > self._offset:
            # An inode number is reused once freed: a journal compacted twice may come back
            # under the one folded here, so its first line (a new generation) must match too.
            replaced = _journal_head(self._uidlist_path) != self._head
        if replaced:
            self.state, self._offset, self._inode, reloaded = FolderState(), 0, st.st_ino, True
            self._head = _journal_head(self._uidlist_path)
            self._sorted = None
            if self._from_checkpoint():
                st = os.stat(self._uidlist_path)  # it may have grown since
                if st.st_ino != self._inode:  # or been replaced: start again
                    return self._read_tail() or True
        if st.st_size == self._offset:
            return reloaded
        before = (self.state.highestmodseq, self.state.uidnext)
        count = len(self.state.entries)
        try:
            self._offset += _fold_tail(self.path / UIDLIST, self._offset, self.state, st.st_size)
            if not self.state.uidvalidity:
                raise CorruptJournal("no header")
        except CorruptJournal as e:
            self._rebuild(str(e))
            return True
        if count != len(self.state.entries) or before[1] != self.state.uidnext:
            self._sorted = None  # messages came or went (flag changes keep the UID list)
        messages = len(self.state.entries)
        if messages >= CHECKPOINT_MIN and self.state.lines - self._checkpointed >= max(
            CHECKPOINT_LINES, messages // CHECKPOINT_SHARE
        ):
            self._checkpoint()
        return reloaded or before != (self.state.highestmodseq, self.state.uidnext)

    def _from_checkpoint(self) -> bool:
        """Start the fold from the checkpoint, if one matches the journal (whose inode is
        ``self._inode``), and the summary cache from its offsets; True if it did."""
        self._checkpointed = 0
        try:
            fd = os.open(self._uidlist_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            cache_fd: int | None = os.open(self.cache.path, os.O_RDONLY)
        except FileNotFoundError:
            cache_fd = None
        try:
            if os.fstat(fd).st_ino != self._inode:
                return False
            loaded = checkpoint.read(self.path, fd, cache_fd)
            if loaded is None:
                return False
            self.state, self._offset = loaded.state, loaded.offset
            self._checkpointed = loaded.state.lines
            if (
                loaded.cache is not None
                and cache_fd is not None
                and self.cache.adopt(loaded.cache, cache_fd)
            ):
                cache_fd = None
            return True
        finally:
            os.close(fd)
            if cache_fd is not None:
                os.close(cache_fd)

    def _checkpoint(self, mark: checkpoint.Mark | None = None) -> None:
        """Write the checkpoint of the fold as it stands (memory current): of the journal as
        it is (``mark`` None), or of the one about to replace it (``mark``, lock held)."""
        self._checkpointed = self.state.lines
        staged = None
        try:
            if mark is None:
                assert self._inode is not None
                with open(self._uidlist_path, "rb") as f:
                    if os.fstat(f.fileno()).st_ino != self._inode:
                        return  # replaced meanwhile: the next fold writes one
                    mark = checkpoint.Mark.of(f.fileno(), self._inode, self._offset)
                if mark.head != self._head:
                    return  # a new journal under a reused inode number: not the fold held
                current = True
            else:
                current = False
            staged = checkpoint.stage(
                self.path, checkpoint.encode(self.state, mark, self.cache.offsets())
            )
            with self._locked():
                # Only for the journal it marks: another process may have compacted it.
                if not current or os.stat(self._uidlist_path).st_ino == mark.inode:
                    os.replace(staged, self.path / checkpoint.FILE_NAME)
                    staged = None
        except Exception:  # an optimisation: the folder works without it
            log.failure("cannot write the checkpoint of {path}", path=self.root)
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)

    def _rebuild(self, why: str) -> None:
        """Write a new journal from the files, with a new UIDVALIDITY."""
        with self._locked():
            old_validity = self.state.uidvalidity
            try:
                st = os.stat(self.path / UIDLIST)
                if st.st_ino != self._inode:  # another process rebuilt it meanwhile
                    self._inode, self._offset, self.state = None, 0, FolderState()
                    self._read_tail()
                    return
            except FileNotFoundError:
                pass
            if why != "missing":
                log.warn("rebuilding the UID list of {path}: {why}", path=str(self.path), why=why)
            stamp = self._dir_stamp()
            try:
                floor = int((self.path / VALIDITY).read_text())
            except (OSError, ValueError):
                floor = 0
            state = FolderState(uidvalidity=max(int(time.time()), old_validity + 1, floor + 1))
            write_atomic(self.path / VALIDITY, str(state.uidvalidity).encode())
            lines = [journal.header(state.uidvalidity, 1, 1)]
            uid = 1
            for base, (sub, info) in sorted(self._scan().items(), key=lambda i: _order(i[0])):
                lines.append(journal.added(self._entry_for(uid, uid, base, sub, info)))
                uid += 1
            lines.append(journal.stamped(stamp))
            self.cache.clear()  # its UIDs are the old ones
            write_atomic(self.path / UIDLIST, "".join(lines).encode("utf-8"))
            self.state, self._offset, self._inode = FolderState(), 0, None
            self._read_tail()

    def _scan(self) -> dict[str, tuple[str, str | None]]:
        found: dict[str, tuple[str, str | None]] = {}
        for sub in ("new", "cur"):
            with os.scandir(self.path / sub) as it:
                for de in it:
                    if not de.name.startswith("."):
                        base, info = maildir.split_name(de.name)
                        found[base] = (sub, info)
        return found

    def _entry_for(self, uid: int, modseq: int, base: str, sub: str, info: str | None) -> Entry:
        entry = Entry(uid, base, sub, info, modseq, 0, 0.0)
        path = self.path / sub / entry.filename
        entry.date = os.stat(path).st_mtime
        size = maildir.size_from_base(base)
        entry.size = size if size is not None else maildir.crlf_size(path)
        return entry

    def _reconcile(self) -> None:
        """Bring the journal in line with the directories (lock held, memory current)."""
        stamp = self._dir_stamp()
        found = self._scan()
        state = self.state
        modseq = state.highestmodseq
        lines = []
        for uid, entry in state.entries.items():
            hit = found.pop(entry.base, None)
            if hit is None:
                modseq += 1
                lines.append(journal.expunged(uid, modseq))
            elif hit != (entry.sub, entry.info):
                changed = hit[1] != entry.info
                modseq += changed
                lines.append(journal.flagged(uid, modseq if changed else entry.modseq, *hit))
        uid = state.uidnext
        for base in sorted(found, key=_order):
            modseq += 1
            with contextlib.suppress(FileNotFoundError):
                lines.append(journal.added(self._entry_for(uid, modseq, base, *found[base])))
                uid += 1
        if lines or stamp != state.stamp:
            lines.append(journal.stamped(stamp))
            self._append(lines)
            self._read_tail()

    def _append(self, lines: list[str]) -> None:
        with open(self.path / UIDLIST, "a", encoding="utf-8") as f:
            f.write("".join(lines))

    def sync(self, force: bool = False) -> bool:
        """Pick up changes made elsewhere; True if the folder changed.  When nothing did, this
        is four stat calls: ``cur/`` (which must exist), the journal, the keywords, ``new/``."""
        try:
            cur = os.stat(self._cur_path).st_mtime_ns
        except FileNotFoundError:
            raise StoreError(f"folder {self.name} no longer exists") from None
        changed = self._read_tail()
        self._load_keywords()
        if force or (self._mtime(self._new_path), cur) != self.state.stamp:
            with self._locked():
                changed |= self._read_tail()
                if force or self._dir_stamp() != self.state.stamp:
                    before = self.state.highestmodseq
                    self._reconcile()
                    changed |= before != self.state.highestmodseq
        if changed:
            self._notify()
        return changed

    @contextlib.contextmanager
    def _writing(self) -> Iterator[list[str]]:
        """Lock, catch up, let the caller change files and add journal lines, then commit them."""
        lines: list[str] = []
        before = (self.state.highestmodseq, self.state.uidnext)
        with self._locked():
            self._check_not_moving()
            self._read_tail()
            if self._dir_stamp() != self.state.stamp:
                self._reconcile()
            yield lines
            if lines:
                lines.append(journal.stamped(self._dir_stamp()))
                self._append(lines)
                self._read_tail()
                if self.state.lines > 2 * len(self.state.entries) + COMPACT_SLACK:
                    self._compact()
        if before != (self.state.highestmodseq, self.state.uidnext):
            self._notify()

    def _compact(self) -> None:
        """Rewrite the journal as one line per message (lock held, memory current)."""
        s = self.state
        stamp = self._dir_stamp()
        lines = [journal.header(s.uidvalidity, s.uidnext, s.highestmodseq)]
        lines += [journal.added(s.entries[uid]) for uid in self.uids()]
        lines += [journal.recent_claimed(s.first_recent), journal.stamped(stamp)]
        faults.point("compact")
        data = "".join(lines).encode("utf-8")
        s.lines, s.stamp = len(lines), stamp
        large = len(s.entries) >= CHECKPOINT_MIN

        def checkpoint_first(inode: int) -> None:
            # Before the rename: a process that sees the new journal finds its checkpoint.
            if large:
                self._checkpoint(checkpoint.Mark.of_bytes(inode, data))

        write_atomic(self.path / UIDLIST, data, before_rename=checkpoint_first)
        # The new journal is the fold held here: take its place without reading it back.
        st = os.stat(self.path / UIDLIST)
        self._inode, self._offset, self._checkpointed = st.st_ino, st.st_size, s.lines
        self._head = data[: checkpoint.HEAD].split(b"\n", 1)[0]
        if not large:  # one from when the folder was larger would be read and refused
            (self.path / checkpoint.FILE_NAME).unlink(missing_ok=True)

    # -- keywords (Dovecot's dovecot-keywords: "<index> <name>", index 0 is letter 'a') --------

    def _load_keywords(self) -> None:
        try:
            st = os.stat(self._keywords_path)
            stamp = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._keywords_stamp:
            return
        self._keywords_stamp = stamp
        self._keywords = maildir.read_keywords(self.path)
        self._flags_of_info = {}

    def keywords(self) -> list[str]:
        """The keywords defined in this folder."""
        self._load_keywords()
        return [w for w in self._keywords if w]

    def flags_of(self, info: str | None) -> frozenset[str]:
        """The flags a Maildir info string stands for (keywords as of the last sync)."""
        if not info:
            return _NO_FLAGS
        flags = self._flags_of_info.get(info)
        if flags is None:
            flags = self._flags_of_info[info] = maildir.flags_from_info(info, self._keywords)
        return flags

    def _info_for(self, flags: Iterable[str]) -> str:
        """Maildir info letters for ``flags``, registering new keywords as needed."""
        self._load_keywords()
        letters = set()
        wanted = {canonical_flag(f) for f in flags}
        if any(f not in self._keywords for f in wanted if not f.startswith("\\")):
            with self._locked():
                self._keywords_stamp = None
                self._load_keywords()
                new = sorted(
                    f for f in wanted if not f.startswith("\\") and f not in self._keywords
                )
                if len(self.keywords()) + len(new) > maildir.MAX_KEYWORDS:
                    raise StoreError("too many keywords in this folder")
                self._keywords += new
                self._flags_of_info = {}
                maildir.write_keywords(self.path, self._keywords)
        for flag in wanted:
            if flag in maildir.LETTER_OF:
                letters.add(maildir.LETTER_OF[flag])
            elif flag in self._keywords:
                letters.add(chr(ord("a") + self._keywords.index(flag)))
        return "".join(sorted(letters))

    # -- reading ------------------------------------------------------------------------------

    def uids(self) -> Sequence[int]:
        if self._sorted is None:
            self._sorted = self.state.entries.uid_list()
        return self._sorted

    def message(self, uid: int) -> StoredMessage:
        return StoredMessage(self, self.state.entries[uid])

    def recent_count(self) -> int:
        """Messages no session has seen as ``\\Recent`` yet."""
        uids = self.uids()
        return len(uids) - bisect.bisect_left(uids, self.state.first_recent)

    def changes_since(self, modseq: int) -> list[int] | None:
        return self.state.changes_since(modseq)

    def first_unseen(self) -> int | None:
        return min(self.state.without_letter("S"), default=None)

    def unseen_count(self) -> int:
        return len(self.state.without_letter("S"))

    def _letter_of(self, flag: str) -> str | None:
        """The info letter of ``flag`` (a system flag or keyword); None if it has none."""
        flag = canonical_flag(flag)
        letter = maildir.LETTER_OF.get(flag)
        if letter is None and flag in self._keywords:
            letter = chr(ord("a") + self._keywords.index(flag))
        return letter

    def uids_with_flag(self, flag: str) -> Set[int]:
        """UIDs present whose flags hold ``flag`` (a system flag or keyword), from the index."""
        letter = self._letter_of(flag)
        return self.state.with_letter(letter) if letter else frozenset()

    def uids_without_flag(self, flag: str) -> Set[int]:
        """UIDs present whose flags lack ``flag``, from the index (kept for ``\\Seen`` and
        ``\\Deleted``, so UNSEEN and UNDELETED cost what they find)."""
        letter = self._letter_of(flag)
        return self.state.without_letter(letter) if letter else self.state.entries.keys()

    def uids_dated(self, start: float | None, end: float | None) -> set[int]:
        """UIDs present whose internal date is in ``[start, end)`` (None: open), from the
        index."""
        return self.state.dated(start, end)

    def uids_sized(self, low: int | None, high: int | None) -> set[int]:
        """UIDs present whose size is in ``[low, high)`` (None: open), from the index."""
        return self.state.sized(low, high)

    def uids_ordered(self, key: Literal["date", "size"]) -> list[int]:
        """UIDs present by internal date or size, from the index (a fresh list)."""
        if key not in ("date", "size"):
            raise ValueError(f"cannot order by {key!r}")
        return self.state.ordered(key)

    def header_values(self, field: str) -> Mapping[int, str]:
        """Each message's decoded, lower-cased ``field`` from the search file; messages
        without a summary yet get one first (as for :meth:`search_headers`)."""
        self._summarise_all()
        return self.cache.column(field)

    def _summarise_all(self) -> None:
        """Make the search file cover every message present."""
        with self._locked():
            self.cache.prepare_search()
        known = self.cache.known()
        for uid in [u for u in self.uids() if u not in known]:
            with contextlib.suppress(KeyError):
                self.message(uid).summary()

    # -- changing -----------------------------------------------------------------------------

    def claim_recent(self) -> list[int]:
        """The UIDs that are ``\\Recent`` for the caller; no other session gets them.

        RFC 3501 §2.3.2: a message is recent in exactly one session, the first to see it.
        """
        with self._writing() as lines:
            uids = self.uids()
            mine = list(uids[bisect.bisect_left(uids, self.state.first_recent) :])
            if mine:
                lines.append(journal.recent_claimed(mine[-1] + 1))
        return mine

    def store_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode
    ) -> dict[int, frozenset[str]]:
        wanted = frozenset(canonical_flag(f) for f in flags) - {"\\Recent"}
        uids = list(uids)
        infos: dict[str | None, str | None] = {}  # old info -> new info (None: unchanged)
        root = self.root
        with self._writing() as lines:
            modseq = self.state.highestmodseq
            for uid in uids:
                entry = self.state.entries.get(uid)
                if entry is None:
                    continue
                if entry.info not in infos:
                    old = self.flags_of(entry.info)
                    new = wanted if mode == "=" else (old | wanted if mode == "+" else old - wanted)
                    infos[entry.info] = None if new == old else self._info_for(new)
                info = infos[entry.info]
                if info is None:
                    continue
                try:
                    # Plain strings: pathlib costs more than the rename itself here.
                    os.rename(
                        f"{root}/{entry.sub}/{entry.filename}", f"{root}/cur/{entry.base}:2,{info}"
                    )
                except FileNotFoundError:
                    continue  # removed by someone else: the next sync reconciles
                faults.point("flags-renamed")
                modseq += 1
                lines.append(journal.flagged(uid, modseq, "cur", info))
        entries = self.state.entries
        return {u: self.flags_of(entries[u].info) for u in uids if u in entries}

    def expunge(self, uids: Iterable[int]) -> list[int]:
        removed = []
        with self._writing() as lines:
            modseq = self.state.highestmodseq
            for uid in uids:
                entry = self.state.entries.get(uid)
                if entry is None:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path / entry.sub / entry.filename)
                faults.point("expunge-unlinked")
                modseq += 1
                lines.append(journal.expunged(uid, modseq))
                removed.append(uid)
        return removed

    def append(
        self, source: MessageSource, flags: Iterable[str] = (), internal_date: float | None = None
    ) -> Deferred[int]:
        flags = [f for f in flags if canonical_flag(f) != "\\Recent"]
        info = self._info_for(flags) if flags else None
        return self._submitter().submit(self, source, info, internal_date, None)

    def _submitter(self) -> Committer:
        if self._committer is None:
            raise StoreError("this folder was opened without a committer: it cannot store")
        return self._committer

    # -- the committer's side (committer.Target) ------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Reactor: where the journal stands, for :meth:`place` in the committer's thread."""
        s = self.state
        return (self._inode, self._offset, s.uidvalidity, s.uidnext, s.highestmodseq, s.stamp)

    def committed(self) -> None:
        """Reactor: a commit batch wrote journal lines; take them in and tell the listeners."""
        if self._read_tail():
            self._notify()

    def uid_of(self, base: str) -> int | None:
        """Reactor: the UID of the message stored under this Maildir base name, if present."""
        return self.state.by_base.get(base)

    def place(self, snapshot: Snapshot, work: Sequence[Placement]) -> bool:
        """Worker thread: rename prepared messages into place and journal them (no flush).

        False when the journal was replaced since ``snapshot`` (the caller retries later);
        ShardMoving when the user's mail is being moved.
        """
        inode, offset, validity, uidnext, modseq, stamp = snapshot
        with self._locked():
            self._check_not_moving()
            st = os.stat(self.path / UIDLIST)
            if st.st_ino != inode or st.st_size < offset:
                return False
            tail = FolderState(validity, uidnext, modseq, stamp=stamp, last_added=uidnext - 1)
            try:
                _fold_tail(self.path / UIDLIST, offset, tail)
            except CorruptJournal:
                return False
            clean = self._dir_stamp() == tail.stamp
            lines, summaries = [], []
            uid, modseq = tail.uidnext, tail.highestmodseq
            for prepared, info in work:
                sub = "new" if info is None else "cur"
                uid, modseq = uid + 1, modseq + 1
                entry = Entry(uid - 1, prepared.base, sub, info, modseq, prepared.size,
                              prepared.date)  # fmt: skip
                os.rename(self.path / "tmp" / prepared.tmp_name, self.path / sub / entry.filename)
                faults.point("delivery-renamed")
                lines.append(journal.added(entry))
                if prepared.summary is not None:
                    summaries.append((entry.uid, prepared.summary))
            if clean:
                lines.append(journal.stamped(self._dir_stamp()))
            self._append(lines)
            faults.point("delivery-journaled")
            self.cache.append(summaries)
        return True

    def flush(self) -> None:
        """Without syncfs: make renames and journal lines durable one file at a time."""
        for sub in ("new", "cur"):
            fsync_dir(self.path / sub)
        fsync_file(self.path / UIDLIST)

    def copy_to(self, uids: Iterable[int], target: IFolder) -> Deferred[list[tuple[int, int]]]:
        """Copies commit in one batch in source order, so their new UIDs ascend likewise."""
        return self._transfer(uids, target, keep_names=False)

    @inlineCallbacks
    def move_to(
        self, uids: Iterable[int], target: IFolder
    ) -> Generator[Deferred[Any], Any, list[tuple[int, int]]]:
        """A move keeps each message's file name, so its POP3 UIDL survives it."""
        pairs: list[tuple[int, int]] = yield self._transfer(uids, target, keep_names=True)
        self.expunge([src for src, _ in pairs])
        return pairs

    @inlineCallbacks
    def _transfer(
        self, uids: Iterable[int], target: IFolder, keep_names: bool
    ) -> Generator[Deferred[Any], Any, list[tuple[int, int]]]:
        if not isinstance(target, MaildirFolder):
            raise StoreError("cannot copy between different store types")
        uids = list(uids)
        if self._before_transfer is not None:
            present = [e for e in map(self.state.entries.get, uids) if e is not None]
            if present:
                files = [self.path / e.sub / e.filename for e in present]
                yield self._before_transfer(self, target, files)
        # (Read after the hook: a flag change meanwhile may have renamed a file.)
        jobs, sources = [], []
        for uid in uids:
            entry = self.state.entries.get(uid)
            if entry is None:
                continue
            info = target._info_for(self.flags_of(entry.info)) if entry.info else None
            path = self.path / entry.sub / entry.filename
            base = entry.base if keep_names and entry.base not in target.state.by_base else None
            jobs.append((target, path, info, entry.date, self.cache.get(uid), base))
            sources.append(uid)
        pairs = []
        for uid, d in zip(sources, self._submitter().submit_all(jobs), strict=True):
            try:
                pairs.append((uid, (yield d)))
            except FileNotFoundError:
                continue  # expunged meanwhile
        return pairs

    @inlineCallbacks
    def filter_contents(
        self, uids: Iterable[int], test: Callable[[Buffer], bool]
    ) -> Generator[Deferred[Any], Any, set[int]]:
        """The UIDs among ``uids`` whose content (as :meth:`StoredMessage.buffer` gives it)
        passes ``test``, which runs in worker threads on ``SCAN_BATCH`` files at a time, so
        the reactor thread never waits for a file.  A file renamed or removed meanwhile is
        looked for again on the reactor thread, after a sync."""
        entries = self.state.entries
        jobs = [
            (uid, f"{self.root}/{entries[uid].sub}/{entries[uid].filename}", entries[uid].size)
            for uid in uids
            if uid in entries
        ]
        found: set[int] = set()
        for at in range(0, len(jobs), SCAN_BATCH):
            hits, missing = yield deferToThread(_filter_files, jobs[at : at + SCAN_BATCH], test)
            found.update(hits)
            for uid in missing:
                with contextlib.suppress(KeyError):  # expunged: no match
                    if test(self.message(uid).buffer()):
                        found.add(uid)
        return found

    def search_headers(self, field: str, needle: str) -> set[int]:
        """UIDs present whose decoded ``field`` contains ``needle`` (lower case), from the
        search file; messages without a summary yet get one first."""
        self._summarise_all()
        present = self.state.entries
        return {u for u in self.cache.search(field, needle) if u in present}

    # -- listeners ----------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:
                log.failure("folder listener failed")


_NO_FLAGS: frozenset[str] = frozenset()
_DIGITS = re.compile(r"(\d+)")


def _order(base: str) -> tuple[int, list[str | int], str]:
    """New messages get UIDs in delivery-time order.

    A Maildir base name starts with the second, then a part such as ``M637P28836Q2727``
    (microsecond, process, counter) whose numbers are compared as numbers: ``M637`` was
    delivered before ``M4836`` in the same second, though it sorts after it as text.
    """
    head, _, rest = base.partition(".")
    middle = rest.split(".", 1)[0]
    parts: list[str | int] = [int(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(middle))]
    return (int(head) if head.isdigit() else 0, parts, base)


def _filter_files(
    jobs: list[tuple[int, str, int]], test: Callable[[Buffer], bool]
) -> tuple[list[int], list[int]]:
    """Worker thread: of (uid, path, size) jobs, the UIDs whose content passes ``test``, and
    those whose file was not found."""
    hits, missing = [], []
    for uid, path, size in jobs:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            missing.append(uid)
            continue
        try:
            data = _buffer_of(fd, size) if size >= MAP_AT else to_crlf(_read_all(fd, size))
        finally:
            os.close(fd)
        if test(data):
            hits.append(uid)
    return hits, missing


def _buffer_of(fd: int, size: int) -> Buffer:
    """A large message: a memory map of its file when that has CRLF line endings already (it
    then has exactly ``size`` bytes), else its bytes made CRLF."""
    if os.fstat(fd).st_size != size:  # written by another agent with bare LF
        return to_crlf(_read_all(fd, size))
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)


def _read_all(fd: int, size: int) -> bytes:
    """The rest of the file ``fd``, read with plain ``read(2)`` calls (a file object costs more
    than the read of a small message); ``size`` is the expected length, a hint."""
    parts = [os.read(fd, size + 1)]
    while parts[-1]:
        parts.append(os.read(fd, max(size, 65536)))
    return parts[0] if len(parts) == 2 else b"".join(parts)


def _fold_tail(path: Path, offset: int, state: FolderState, size: int | None = None) -> int:
    """Apply the complete journal lines after ``offset`` (up to ``size``) to ``state``.

    Returns how many bytes they took; a torn last line is left for next time.  Raises
    CorruptJournal for a line that cannot be applied.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(-1 if size is None else size - offset)
    end = data.rfind(b"\n") + 1
    try:
        lines = data[:end].decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError as e:
        raise CorruptJournal("journal is not UTF-8") from e
    for line in lines:
        state.apply(line)
    return end
