"""The in-memory store implements the same interfaces and behaves like the Maildir store."""

import pytest
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from ourmail.interfaces import (
    DEFAULT_FOLDERS,
    FolderExists,
    IFolder,
    IMailStore,
    IStoredMessage,
    IUserStore,
    NoSuchFolder,
)
from ourmail.store.memory import MemoryStore
from ourmail.store.userstore import ensure_default_folders

MSG = b"From: a@b.c\nSubject: hello\n\nbody\n"


def result(d: Deferred) -> object:
    out = []
    d.addCallback(out.append)
    assert out, "the in-memory store answers at once"
    return out[0]


def test_interfaces() -> None:
    store = MemoryStore()
    user = store.user("alice@example.org")
    folder = user.folder("INBOX")
    uid = result(folder.append(MSG))
    verifyObject(IMailStore, store)
    verifyObject(IUserStore, user)
    verifyObject(IFolder, folder)
    verifyObject(IStoredMessage, folder.message(uid))


def test_behaviour_matches_the_maildir_store() -> None:
    user = MemoryStore().user("alice@example.org")
    ensure_default_folders(user)
    assert user.list_folders() == ["INBOX", *sorted(DEFAULT_FOLDERS)]
    assert user.special_uses() == DEFAULT_FOLDERS
    inbox = user.folder("inbox")
    uid = result(user.deliver(MSG, flags=["\\seen"]))
    msg = inbox.message(uid)
    assert msg.read() == MSG.replace(b"\n", b"\r\n") and msg.flags == {"\\Seen"}
    assert msg.summary().headers["subject"] == "hello"
    start = inbox.highestmodseq
    inbox.store_flags([uid], ["$Work"], "+")
    assert inbox.changes_since(start) == [uid] and inbox.keywords() == ["$Work"]
    assert inbox.claim_recent() == [uid] and inbox.claim_recent() == []
    pairs = result(inbox.move_to([uid], user.folder("Archive")))
    assert pairs == [(uid, 1)] and list(inbox.uids()) == []
    user.create_folder("a/b", "\\Junk")
    with pytest.raises(FolderExists):
        user.create_folder("a")
    user.rename_folder("a", "c")
    assert "c/b" in user.list_folders() and user.special_uses()["c/b"] == "\\Junk"
    with pytest.raises(NoSuchFolder):
        user.folder("a")
