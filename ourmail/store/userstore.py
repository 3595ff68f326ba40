"""A user's Maildir++ tree and the store of all users.

Folder names map to directories as Dovecot's Maildir++ layout does: ``Archive/2024`` is
``.Archive.2024`` under the user's Maildir, each part in modified UTF-7.  A name part may not
contain ``.`` (the on-disk separator) or control characters, so no name can leave the user's
directory: the directory is always one path component that starts with a dot and has no ``/``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import shutil
import unicodedata
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import cast

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ourmail import mutf7
from ourmail.fsutil import fsync_dir, write_atomic
from ourmail.interfaces import (
    DEFAULT_FOLDERS,
    BadFolderName,
    FolderExists,
    IMailStore,
    ITransferObserver,
    IUserStore,
    MessageSource,
    NoSuchFolder,
    ShardMoving,
    StoreError,
)
from ourmail.store import faults, maildir
from ourmail.store.committer import Committer, Reactor
from ourmail.store.folder import MaildirFolder
from ourmail.store.shardmove import MovingShards
from ourmail.store.shards import FILE_NAME as SHARDS_FILE
from ourmail.store.shards import ShardMap, shard_of

log = Logger()

SUBSCRIPTIONS = "subscriptions"
#: ``attribute TAB folder name`` lines (RFC 6154 CREATE-SPECIAL-USE).
SPECIAL_USES = "special-use"
MAX_DEPTH = 16
MAX_DISK_NAME = 240
#: Folders kept loaded after their last session closes.
WARM_FOLDERS = 4096


def ensure_default_folders(user: IUserStore) -> None:
    """Create the standard folders (and subscribe them) where missing; any IUserStore."""
    existing = set(user.list_folders())
    subscribed = set(user.subscriptions())
    for name, use in DEFAULT_FOLDERS.items():
        if name not in existing:
            with contextlib.suppress(FolderExists):  # another process made it meanwhile
                user.create_folder(name, use)
    for name in ("INBOX", *DEFAULT_FOLDERS):  # clients listing subscribed folders see them
        if name not in subscribed:
            user.subscribe(name)


def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


def canonical_name(name: str) -> str:
    """``inbox`` -> ``INBOX`` (RFC 3501 §5.1: INBOX is case-insensitive); others unchanged."""
    return "INBOX" if is_inbox(name) else name


def disk_name(name: str) -> str:
    """The Maildir++ directory name of a folder; BadFolderName when the name cannot be one."""
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        raise BadFolderName("folder hierarchy too deep")
    for part in parts:
        if not part:
            raise BadFolderName("empty part in folder name")
        if "." in part:
            raise BadFolderName("'.' is not allowed in folder names")
        if any(
            unicodedata.category(c) in ("Cc", "Cs") for c in part
        ):  # C0, DEL, C1, lone surrogates
            raise BadFolderName("control characters are not allowed in folder names")
    encoded = "." + ".".join(mutf7.encode(p).decode("ascii") for p in parts)
    if len(encoded) > MAX_DISK_NAME:
        raise BadFolderName("folder name too long")
    return encoded


def name_from_disk(entry: str) -> str | None:
    """The folder name of a ``.Name.Sub`` directory, or None if it is not one of ours."""
    if not entry.startswith(".") or entry in (".", ".."):
        return None
    try:
        return "/".join(mutf7.decode(p.encode("ascii")) for p in entry[1:].split("."))
    except (ValueError, UnicodeEncodeError):
        return None


@implementer(IUserStore)
class MaildirUserStore:
    """The Maildir++ tree of one user."""

    def __init__(self, store: MaildirStore, address: str, root: Path) -> None:
        self.store = store
        self.address = address
        self.root = root
        maildir.make_maildir(root)

    def _check_not_moving(self) -> None:
        if shard_of(self.address) in self.store.moving.moving():
            raise ShardMoving("this mailbox is being moved; try again in a moment")

    def _path(self, name: str) -> Path:
        return self.root if is_inbox(name) else self.root / disk_name(name)

    def _exists(self, path: Path) -> bool:
        return (path / "cur").is_dir()

    def list_folders(self) -> list[str]:
        names = []
        with os.scandir(self.root) as it:
            for de in it:
                name = name_from_disk(de.name)
                if name is not None and de.is_dir() and (Path(de.path) / "cur").is_dir():
                    names.append(name)
        return ["INBOX", *sorted(names)]

    def folder(self, name: str) -> MaildirFolder:
        name = canonical_name(name)
        try:
            path = self._path(name)
        except BadFolderName as e:
            raise NoSuchFolder(name) from e
        if not self._exists(path):
            raise NoSuchFolder(name)
        return self.store._folder(path, name, shard_of(self.address), self.address)

    def create_folder(self, name: str, special_use: str | None = None) -> None:
        self._check_not_moving()
        name = canonical_name(name).rstrip("/")
        if is_inbox(name) or self._exists(self._path(name)):
            raise FolderExists(name)
        if special_use:
            # Recorded first: a crash before the folder exists leaves an entry that is ignored.
            self._write_uses({**self._stored_uses(), name: special_use})
        parts = name.split("/")
        for depth in range(1, len(parts) + 1):
            path = self._path("/".join(parts[:depth]))
            if not self._exists(path):
                maildir.make_maildir(path)
                (path / "maildirfolder").touch()
                fsync_dir(self.root)

    def _stored_uses(self) -> dict[str, str]:
        try:
            text = (self.root / SPECIAL_USES).read_text("utf-8")
        except FileNotFoundError:
            return {}
        pairs = (line.split("\t", 1) for line in text.splitlines() if "\t" in line)
        return {name: use for use, name in pairs}

    def _write_uses(self, uses: dict[str, str]) -> None:
        body = "".join(f"{use}\t{name}\n" for name, use in sorted(uses.items()))
        write_atomic(self.root / SPECIAL_USES, body.encode("utf-8"))

    def special_uses(self) -> dict[str, str]:
        existing = set(self.list_folders())
        return {n: u for n, u in self._stored_uses().items() if n in existing}

    def delete_folder(self, name: str) -> None:
        self._check_not_moving()
        name = canonical_name(name)
        if is_inbox(name):
            raise StoreError("INBOX cannot be deleted")
        path = self._path(name)
        if not self._exists(path):
            raise NoSuchFolder(name)
        if any(n.startswith(name + "/") for n in self.list_folders()):
            raise StoreError("delete the child folders first")
        trash = self.root / "tmp" / f".deleted{path.name}.{os.getpid()}.{id(path)}"
        os.rename(path, trash)
        fsync_dir(self.root)
        uses = self._stored_uses()
        if uses.pop(name, None) is not None:
            self._write_uses(uses)
        self.store._forget(path)
        shutil.rmtree(trash, ignore_errors=True)

    def rename_folder(self, old: str, new: str) -> None:
        self._check_not_moving()
        old, new = canonical_name(old), canonical_name(new).rstrip("/")
        if is_inbox(new) or self._exists(self._path(new)):
            raise FolderExists(new)
        if not self._exists(self._path(old)):
            raise NoSuchFolder(old)
        if new.startswith(old + "/"):
            raise BadFolderName("cannot move a folder into itself")
        if is_inbox(old):
            self._rename_inbox(new)
            return
        if "/" in new:
            with contextlib.suppress(FolderExists):
                self.create_folder(new.rsplit("/", 1)[0])
        moves = [(old, new)] + [
            (n, new + n[len(old) :]) for n in self.list_folders() if n.startswith(old + "/")
        ]
        for _src, dst in moves:
            self._path(dst)  # validates the new name before anything moves
        for src, dst in moves:
            os.rename(self._path(src), self._path(dst))
            faults.point("folder-renamed")
            self.store._forget(self._path(src))
        fsync_dir(self.root)
        uses = self._stored_uses()
        if any(src in uses for src, _ in moves):
            for src, dst in moves:
                if src in uses:
                    uses[dst] = uses.pop(src)
            self._write_uses(uses)

    def _rename_inbox(self, new: str) -> None:
        """RFC 3501 §6.3.5: renaming INBOX moves its messages to the new folder, INBOX stays."""
        self.create_folder(new)
        target = self._path(new)
        for sub in ("new", "cur"):
            for entry in os.listdir(self.root / sub):
                os.rename(self.root / sub / entry, target / sub / entry)
            fsync_dir(target / sub)
        self.store._forget(self.root)

    def subscriptions(self) -> list[str]:
        try:
            text = (self.root / SUBSCRIPTIONS).read_text("utf-8")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line]

    def _write_subscriptions(self, names: Iterable[str]) -> None:
        body = "".join(f"{n}\n" for n in names)
        write_atomic(self.root / SUBSCRIPTIONS, body.encode("utf-8"))

    def subscribe(self, name: str) -> None:
        name = canonical_name(name)
        names = self.subscriptions()
        if name not in names:
            self._write_subscriptions([*names, name])

    def unsubscribe(self, name: str) -> None:
        name = canonical_name(name)
        names = self.subscriptions()
        if name in names:
            self._write_subscriptions([n for n in names if n != name])

    def deliver(
        self, source: MessageSource, folder: str = "INBOX", flags: Iterable[str] = ()
    ) -> Deferred[int]:
        return self.folder(folder).append(source, flags)


@implementer(IMailStore)
class MaildirStore:
    """All users' Maildirs, placed by the shard map.

    Folder objects are shared by every session of this process that opens the same folder, so a
    change made by one session reaches the others' listeners at once.
    """

    def __init__(self, data_dir: Path, reactor: Reactor | None = None) -> None:
        """``reactor`` runs the group commit (:class:`Committer`); the global one if None."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = cast(Reactor, default_reactor)
        self.data_dir = data_dir
        #: Every delivery, APPEND and COPY into this store's folders commits through it.
        self.committer = Committer(reactor)
        self.shards = ShardMap(data_dir)
        self._shards_stamp = self._stamp()
        self.moving = MovingShards(data_dir)
        # Open folders are shared by every session that uses them; the most recently used stay
        # loaded after their last session ends, so a new SELECT finds them warm.
        self._folders: weakref.WeakValueDictionary[str, MaildirFolder] = (
            weakref.WeakValueDictionary()
        )
        self._warm: collections.OrderedDict[str, MaildirFolder] = collections.OrderedDict()
        self._users: collections.OrderedDict[str, MaildirUserStore] = collections.OrderedDict()
        #: Told before messages are copied or moved between two folders of a user, with the
        #: folders' special uses (learning from Junk moves, docs/filters.md).
        self.observers: list[ITransferObserver] = []

    def _stamp(self) -> tuple[int, int]:
        try:
            st = os.stat(self.data_dir / SHARDS_FILE)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_ino)

    def user(self, address: str) -> MaildirUserStore:
        stamp = self._stamp()
        if stamp != self._shards_stamp:  # `ourmail shard move` changed the map
            self.shards, self._shards_stamp = ShardMap(self.data_dir), stamp
            self._users.clear()
            self._warm.clear()
            self._folders = weakref.WeakValueDictionary()
        user = self._users.get(address)
        if user is None or not (user.root / "cur").is_dir():
            user = MaildirUserStore(self, address, self.shards.user_dir(address))
            self._users[address] = user
        self._users.move_to_end(address)
        if len(self._users) > WARM_FOLDERS:
            self._users.popitem(last=False)
        return user

    def _folder(self, path: Path, name: str, shard: int, owner: str) -> MaildirFolder:
        key = str(path)
        folder = self._folders.get(key)
        if folder is None:
            hook = functools.partial(self._transferring, owner)
            folder = MaildirFolder(path, name, shard, self.moving, self.committer, hook)
            self._folders[key] = folder
        self._warm[key] = folder
        self._warm.move_to_end(key)
        if len(self._warm) > WARM_FOLDERS:
            self._warm.popitem(last=False)
        return folder

    def _transferring(
        self, owner: str, source: MaildirFolder, target: MaildirFolder, files: list[Path]
    ) -> Deferred[None]:
        """Tell the observers; their failures are logged, never the transfer's."""
        if not self.observers:
            return succeed(None)
        user = self.user(owner)
        uses = user.special_uses()
        mine = target.path == user.root or target.path.parent == user.root
        target_use = uses.get(target.name) if mine else None
        calls = [
            maybeDeferred(o.transferring, owner, uses.get(source.name), target_use, files)
            for o in self.observers
        ]

        def failed(failure: Failure) -> None:
            log.failure("a transfer observer failed for {user}", failure, user=owner)

        d: Deferred[None] = gatherResults(calls, consumeErrors=True).addCallbacks(
            lambda _: None, failed
        )
        return d

    def _forget(self, path: Path) -> None:
        for key in [k for k in self._folders if k == str(path) or k.startswith(str(path) + ".")]:
            self._folders.pop(key, None)
            self._warm.pop(key, None)
