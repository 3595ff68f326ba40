"""One Maildir folder with IMAP semantics: UIDs, flags, change detection.

Implementation notes (keep these true when changing this module):

* The Maildir files are the truth; ``ourmail-uidlist`` (uid <-> base name, UIDVALIDITY, UIDNEXT)
  is a cache that keeps UIDs stable.  A missing or corrupt UID list is rebuilt from the files
  with a new, larger UIDVALIDITY, so clients resynchronise instead of trusting stale UIDs.
* UIDs are assigned only under an exclusive ``flock`` on ``ourmail-uidlist.lock``, after re-reading
  the UID list, so several processes sharing a folder agree on every UID.
* Changes made by others (a delivery agent dropping into ``new/``, mutt or Dovecot renaming a file
  to change flags, a deleted file) are noticed by :meth:`MaildirFolder.sync`; when the directory
  and UID-list modification times are unchanged, sync costs three ``stat`` calls.
* Durable work (writing or linking message files, fsync) runs on the thread pool; the in-memory
  state is only touched on the reactor thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.fsutil import write_atomic
from ourmail.interfaces import FlagMode, IFolder, IStoredMessage, MessageSource, StoreError
from ourmail.store import maildir

UIDLIST = "ourmail-uidlist"
LOCKFILE = "ourmail-uidlist.lock"
KEYWORDS = "dovecot-keywords"
_HEADER = "ourmail-uidlist 1"

log = Logger()


@attrs.define
class _Entry:
    uid: int
    base: str
    sub: str
    filename: str
    info: str
    modseq: int
    size: int | None = None


@implementer(IStoredMessage)
class StoredMessage:
    """A message as of the folder's last sync."""

    def __init__(self, folder: MaildirFolder, entry: _Entry) -> None:
        self._folder = folder
        self._entry = entry
        self.uid = entry.uid
        self.flags = folder._flags_of(entry.info)
        self.modseq = entry.modseq

    @property
    def path(self) -> Path:
        return self._folder.path / self._entry.sub / self._entry.filename

    @property
    def internal_date(self) -> float:
        try:
            return os.stat(self.path).st_mtime
        except FileNotFoundError:
            return time.time()

    @property
    def size(self) -> int:
        if self._entry.size is None:
            self._entry.size = len(self.read())
        return self._entry.size

    def read(self) -> bytes:
        """The message with CRLF line endings; KeyError if it vanished since the last sync."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._folder.sync(force=True)
            entry = self._folder._entries.get(self.uid)
            if entry is None:
                raise KeyError(self.uid) from None
            self._entry = entry
            data = self.path.read_bytes()
        return maildir.to_crlf(data)


@implementer(IFolder)
class MaildirFolder:
    """A Maildir (INBOX) or Maildir++ subfolder."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self.uidvalidity = 0
        self.uidnext = 1
        self.highestmodseq = 1
        self._entries: dict[int, _Entry] = {}
        self._by_base: dict[str, int] = {}
        self._sorted: list[int] | None = []
        self._keywords: list[str] = []
        self._stamp: tuple[int, ...] | None = None
        self._uidlist_stamp: tuple[int, int] | None = None
        self._keywords_stamp: tuple[int, int] | None = None
        self._listeners: list[Callable[[], None]] = []
        self.sync(force=True)

    # -- change detection -----------------------------------------------------------------

    def _mtime(self, name: str) -> tuple[int, int]:
        try:
            st = os.stat(self.path / name)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_ino)

    def sync(self, force: bool = False) -> bool:
        """Pick up outside changes; True if the folder changed. Cheap when nothing did."""
        stamp = (
            *self._mtime("new"),
            *self._mtime("cur"),
            *self._mtime(UIDLIST),
            *self._mtime(KEYWORDS),
        )
        if not force and stamp == self._stamp:
            return False
        if not (self.path / "cur").is_dir():
            raise StoreError(f"folder {self.name} no longer exists")
        with self._locked():
            changed = self._scan()
        self._stamp = (*stamp[:4], *self._mtime(UIDLIST), *self._mtime(KEYWORDS))
        if changed:
            self._notify()
        return changed

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path / LOCKFILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read_uidlist(self) -> dict[str, int] | None:
        """Load the UID list into (uidvalidity, uidnext) and a base -> uid map; None if unusable."""
        try:
            lines = (self.path / UIDLIST).read_text("utf-8").splitlines()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            log.warn("unreadable UID list in {path}; rebuilding", path=str(self.path))
            return None
        try:
            head = lines[0].split()
            if " ".join(head[:2]) != _HEADER:
                raise ValueError(lines[0])
            fields = {f[0]: int(f[1:]) for f in head[2:]}
            validity, nxt = fields["V"], fields["N"]
            by_base: dict[str, int] = {}
            for line in lines[1:]:
                uid_s, base = line.split(" ", 1)
                uid = int(uid_s)
                if not 0 < uid < nxt:
                    raise ValueError(line)
                by_base[base] = uid
        except (ValueError, IndexError, KeyError):
            log.warn("corrupt UID list in {path}; rebuilding", path=str(self.path))
            return None
        self.uidvalidity, self.uidnext = validity, nxt
        return by_base

    def _write_uidlist(self) -> None:
        lines = [f"{_HEADER} V{self.uidvalidity} N{self.uidnext}"]
        lines += [f"{uid} {self._entries[uid].base}" for uid in self.uids()]
        write_atomic(self.path / UIDLIST, ("\n".join(lines) + "\n").encode("utf-8"))

    def _scan(self) -> bool:
        """Reconcile memory with the UID list and the files. Called with the lock held."""
        found: dict[str, tuple[str, str, str]] = {}
        for sub in ("new", "cur"):
            with os.scandir(self.path / sub) as it:
                for de in it:
                    if de.name.startswith("."):
                        continue
                    base, info = maildir.split_name(de.name)
                    found[base] = (sub, de.name, info)
        self._load_keywords()

        rewrite = False
        uidlist_stamp = self._mtime(UIDLIST)
        if uidlist_stamp != self._uidlist_stamp or not self.uidvalidity:
            known = self._read_uidlist()
            if known is None:
                known = {}
                self.uidvalidity = max(int(time.time()), self.uidvalidity + 1)
                self.uidnext = 1
                rewrite = True
        else:
            known = dict(self._by_base)

        changed = False
        entries: dict[int, _Entry] = {}
        for base, uid in known.items():
            if base not in found:
                rewrite = True
                if uid in self._entries:
                    self.highestmodseq += 1  # an expunge is a change other sessions must see
                continue
            sub, filename, info = found.pop(base)
            old = self._entries.get(uid)
            if old is not None and old.base == base:
                if old.info != info:
                    self.highestmodseq += 1
                    old.modseq = self.highestmodseq
                    changed = True
                old.sub, old.filename, old.info = sub, filename, info
                entries[uid] = old
            else:
                self.highestmodseq += 1
                entries[uid] = _Entry(
                    uid, base, sub, filename, info, self.highestmodseq, maildir.size_from_base(base)
                )
                changed = True
        if len(entries) != len(self._entries) or set(entries) != set(self._entries):
            changed = True
        for base in sorted(found, key=_delivery_order):
            sub, filename, info = found[base]
            uid = self.uidnext
            self.uidnext += 1
            self.highestmodseq += 1
            entries[uid] = _Entry(
                uid, base, sub, filename, info, self.highestmodseq, maildir.size_from_base(base)
            )
            rewrite = changed = True
        self._entries = entries
        self._by_base = {e.base: uid for uid, e in entries.items()}
        self._sorted = None
        if rewrite:
            self._write_uidlist()
        self._uidlist_stamp = self._mtime(UIDLIST)
        return changed

    # -- keywords (Dovecot's dovecot-keywords: "<index> <name>", index 0 is letter 'a') --------

    def _load_keywords(self) -> None:
        stamp = self._mtime(KEYWORDS)
        if stamp == self._keywords_stamp:
            return
        self._keywords_stamp = stamp
        words: list[str] = []
        try:
            for line in (self.path / KEYWORDS).read_text("utf-8").splitlines():
                idx, _, word = line.partition(" ")
                if idx.isdigit() and int(idx) < maildir.MAX_KEYWORDS and word:
                    while len(words) <= int(idx):
                        words.append("")
                    words[int(idx)] = word
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        self._keywords = words

    def _flags_of(self, info: str) -> frozenset[str]:
        flags = set()
        for ch in info:
            if ch in maildir.FLAG_LETTERS:
                flags.add(maildir.FLAG_LETTERS[ch])
            elif "a" <= ch <= "z":
                idx = ord(ch) - ord("a")
                if idx < len(self._keywords) and self._keywords[idx]:
                    flags.add(self._keywords[idx])
        return frozenset(flags)

    def _info_for(self, flags: Iterable[str]) -> str:
        """Maildir info letters for ``flags``, registering new keywords as needed."""
        letters = set()
        new_words = []
        for flag in flags:
            flag = maildir.canonical_flag(flag)
            if flag in maildir.LETTER_OF:
                letters.add(maildir.LETTER_OF[flag])
            elif not flag.startswith("\\"):
                if flag not in self._keywords:
                    new_words.append(flag)
                else:
                    letters.add(chr(ord("a") + self._keywords.index(flag)))
        if new_words:
            with self._locked():
                self._keywords_stamp = None
                self._load_keywords()
                for word in new_words:
                    if word not in self._keywords:
                        if len(self._keywords) >= maildir.MAX_KEYWORDS:
                            raise StoreError("too many keywords in this folder")
                        self._keywords.append(word)
                text = "".join(f"{i} {w}\n" for i, w in enumerate(self._keywords) if w)
                write_atomic(self.path / KEYWORDS, text.encode("utf-8"))
                self._keywords_stamp = self._mtime(KEYWORDS)
            letters |= {chr(ord("a") + self._keywords.index(w)) for w in new_words}
        return "".join(sorted(letters))

    # -- reading ----------------------------------------------------------------------------

    def uids(self) -> Sequence[int]:
        if self._sorted is None:
            self._sorted = sorted(self._entries)
        return self._sorted

    def message(self, uid: int) -> StoredMessage:
        return StoredMessage(self, self._entries[uid])

    # -- changing ---------------------------------------------------------------------------

    @inlineCallbacks
    def append(
        self, source: MessageSource, flags: Iterable[str] = (), internal_date: float | None = None
    ) -> Deferred[int]:
        flags = [f for f in flags if maildir.canonical_flag(f) != "\\Recent"]
        info = self._info_for(flags) if flags else None
        base = yield deferToThread(maildir.deliver_file, self.path, source, info, internal_date)
        self.sync(force=True)
        return self._by_base[base]

    def store_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode
    ) -> dict[int, frozenset[str]]:
        wanted = frozenset(maildir.canonical_flag(f) for f in flags) - {"\\Recent"}
        self.sync()
        result: dict[int, frozenset[str]] = {}
        changed = False
        for uid in uids:
            entry = self._entries.get(uid)
            if entry is None:
                continue
            old = self._flags_of(entry.info)
            new = wanted if mode == "=" else (old | wanted if mode == "+" else old - wanted)
            if new != old and self._rename(entry, self._info_for(new)):
                self.highestmodseq += 1
                entry.modseq = self.highestmodseq
                changed = True
            if uid in self._entries:
                result[uid] = self._flags_of(self._entries[uid].info)
        self._stamp = None
        if changed:
            self._notify()
        return result

    def _rename(self, entry: _Entry, info: str) -> bool:
        filename = f"{entry.base}:2,{info}"
        src = self.path / entry.sub / entry.filename
        try:
            os.rename(src, self.path / "cur" / filename)
        except FileNotFoundError:
            # Someone else renamed or removed it: look again, then retry once.
            self.sync(force=True)
            if entry.uid not in self._entries:
                return False
            entry = self._entries[entry.uid]
            try:
                os.rename(self.path / entry.sub / entry.filename, self.path / "cur" / filename)
            except FileNotFoundError:
                return False
        entry.sub, entry.filename, entry.info = "cur", filename, info
        return True

    def take_recent(self, uids: Iterable[int] | None = None) -> list[int]:
        """Move messages still in ``new/`` to ``cur/``; the caller holds them as ``\\Recent``.

        Only one session can take a message, as RFC 3501 §2.3.2 asks of ``\\Recent``.
        """
        wanted = self._entries if uids is None else uids
        taken = []
        for uid in list(wanted):
            entry = self._entries.get(uid)
            if entry is None or entry.sub != "new":
                continue
            filename = f"{entry.base}:2,{entry.info}"
            try:
                os.rename(self.path / "new" / entry.filename, self.path / "cur" / filename)
            except FileNotFoundError:
                continue  # another session or process took it first
            entry.sub, entry.filename = "cur", filename
            taken.append(uid)
        if taken:
            self._stamp = None
        return taken

    def recent_count(self) -> int:
        """Messages nobody has taken as recent yet (for STATUS RECENT)."""
        return sum(1 for e in self._entries.values() if e.sub == "new")

    def expunge(self, uids: Iterable[int]) -> list[int]:
        removed = []
        for uid in uids:
            entry = self._entries.get(uid)
            if entry is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / entry.sub / entry.filename)
            removed.append(uid)
        if removed:
            with self._locked():
                self._uidlist_stamp = None
                self._scan()
            self._stamp = None
            self._notify()
        return removed

    @inlineCallbacks
    def copy_to(self, uids: Iterable[int], target: IFolder) -> Deferred[list[tuple[int, int]]]:
        if not isinstance(target, MaildirFolder):
            raise StoreError("cannot copy between different store types")
        jobs = []
        for uid in uids:
            entry = self._entries.get(uid)
            if entry is None:
                continue
            path = self.path / entry.sub / entry.filename
            info = target._info_for(self._flags_of(entry.info)) or None
            jobs.append((uid, path, info, os.stat(path).st_mtime))
        bases = yield deferToThread(_copy_files, target.path, jobs)
        target.sync(force=True)
        return [(uid, target._by_base[base]) for uid, base in bases]

    @inlineCallbacks
    def move_to(self, uids: Iterable[int], target: IFolder) -> Deferred[list[tuple[int, int]]]:
        pairs = yield self.copy_to(uids, target)
        self.expunge([src for src, _ in pairs])
        return pairs

    # -- listeners --------------------------------------------------------------------------

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


def _delivery_order(base: str) -> tuple[int, str]:
    """New messages get UIDs in delivery-time order (base names start with the time)."""
    head = base.split(".", 1)[0]
    return (int(head) if head.isdigit() else 0, base)


def _copy_files(
    target: Path, jobs: list[tuple[int, Path, str | None, float]]
) -> list[tuple[int, str]]:
    done = []
    for uid, path, info, mtime in jobs:
        try:
            done.append((uid, maildir.deliver_file(target, path, info, mtime)))
        except FileNotFoundError:
            continue
    return done
