"""The Maildir store without a reactor: files, UIDs, flags, outside changes, unsafe names."""

import os
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from ourmail.interfaces import (
    BadFolderName,
    FolderExists,
    IFolder,
    IMailStore,
    IStoredMessage,
    IUserStore,
    NoSuchFolder,
    StoreError,
)
from ourmail.store import maildir
from ourmail.store.folder import MaildirFolder
from ourmail.store.shards import ShardMap, shard_of
from ourmail.store.userstore import MaildirStore, MaildirUserStore

MSG = b"From: a@b.c\r\nSubject: test\r\n\r\nbody\r\n"


@pytest.fixture
def user(tmp_path: Path) -> MaildirUserStore:
    u = MaildirStore(tmp_path).user("alice@example.org")
    u.ensure_default_folders()
    return u


def put(folder: MaildirFolder, data: bytes = MSG, info: str | None = None) -> int:
    base = maildir.deliver_file(folder.path, data, info, None)
    folder.sync()
    return folder._by_base[base]


def test_interfaces(user: MaildirUserStore) -> None:
    verifyObject(IMailStore, user.store)
    verifyObject(IUserStore, user)
    folder = user.folder("INBOX")
    verifyObject(IFolder, folder)
    verifyObject(IStoredMessage, folder.message(put(folder)))


def test_sharded_layout(tmp_path: Path) -> None:
    path = ShardMap(tmp_path).user_dir("alice@example.org")
    n = shard_of("ALICE@example.org")
    assert path == tmp_path / "mail" / f"{n:02x}" / "example.org" / "alice"


def test_shards_toml_maps_ranges_to_roots(tmp_path: Path) -> None:
    (tmp_path / "shards.toml").write_text(
        '[[shard]]\nrange = "00-7f"\nroot = "a"\n[[shard]]\nrange = "80-ff"\nroot = "/vol/b"\n'
    )
    shards = ShardMap(tmp_path)
    assert shards.roots[0x10] == tmp_path / "a"
    assert shards.roots[0xF0] == Path("/vol/b")


def test_default_folders_exist_and_are_subscribed(user: MaildirUserStore) -> None:
    assert user.list_folders() == ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    assert set(user.subscriptions()) >= {"Sent", "Drafts", "Trash", "Junk", "Archive"}
    assert (user.root / ".Sent" / "maildirfolder").exists()


def test_delivery_is_a_maildir_file_with_size(user: MaildirUserStore) -> None:
    folder = user.folder("inbox")
    uid = put(folder)
    (name,) = os.listdir(folder.path / "new")
    assert f",S={len(MSG)},W={len(MSG)}" in name
    msg = folder.message(uid)
    assert msg.read() == MSG and msg.size == len(MSG) and msg.flags == frozenset()
    assert folder.uidnext == uid + 1


def test_flags_are_maildir_letters_and_dovecot_keywords(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    uid = put(folder)
    assert folder.store_flags([uid], ["\\SEEN", "$Forwarded", "\\Flagged"], "+") == {
        uid: frozenset({"\\Seen", "$Forwarded", "\\Flagged"})
    }
    (name,) = os.listdir(folder.path / "cur")
    assert name.endswith(":2,FSa")
    assert (folder.path / "dovecot-keywords").read_text() == "0 $Forwarded\n"
    folder.store_flags([uid], ["\\Flagged"], "-")
    assert folder.message(uid).flags == {"\\Seen", "$Forwarded"}
    folder.store_flags([uid], [], "=")
    assert folder.message(uid).flags == frozenset()


def test_uids_survive_reopening_and_rebuild_after_loss(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    uids = [put(folder) for _ in range(3)]
    again = MaildirFolder(folder.path, "INBOX")
    assert list(again.uids()) == uids and again.uidvalidity == folder.uidvalidity
    (folder.path / "ourmail-uidlist").write_text("garbage\n")
    rebuilt = MaildirFolder(folder.path, "INBOX")
    assert len(rebuilt.uids()) == 3


def test_outside_changes_are_seen(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    uid = put(folder)
    # Another delivery agent drops a file; mutt marks the first message seen by renaming it.
    (folder.path / "new" / "1700000000.other.host").write_bytes(b"Subject: x\n\nLF only\n")
    old = folder.path / "new" / folder._entries[uid].filename
    os.rename(old, folder.path / "cur" / f"{folder._entries[uid].base}:2,S")
    assert folder.sync()
    assert len(folder.uids()) == 2
    assert folder.message(uid).flags == {"\\Seen"}
    other = folder.uids()[1]
    assert folder.message(other).read() == b"Subject: x\r\n\r\nLF only\r\n"
    assert folder.message(other).size == len(b"Subject: x\r\n\r\nLF only\r\n")
    os.unlink(folder.path / "cur" / f"{folder._entries[uid].base}:2,S")
    assert folder.sync()
    assert list(folder.uids()) == [other]
    assert not folder.sync()


def test_expunge_and_listeners(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    calls = []
    folder.add_listener(lambda: calls.append(1))
    uid = put(folder)
    assert calls
    assert folder.expunge([uid, 999]) == [uid]
    assert list(folder.uids()) == []
    assert os.listdir(folder.path / "new") == []


def test_folder_management(user: MaildirUserStore) -> None:
    user.create_folder("Projects/2026")
    assert "Projects" in user.list_folders() and "Projects/2026" in user.list_folders()
    with pytest.raises(FolderExists):
        user.create_folder("Projects")
    with pytest.raises(FolderExists):
        user.create_folder("inbox")
    with pytest.raises(StoreError):
        user.delete_folder("Projects")
    user.rename_folder("Projects", "Work")
    assert "Work/2026" in user.list_folders() and "Projects" not in user.list_folders()
    user.delete_folder("Work/2026")
    user.delete_folder("Work")
    with pytest.raises(NoSuchFolder):
        user.folder("Work")
    with pytest.raises(StoreError):
        user.delete_folder("INBOX")


def test_rename_inbox_moves_its_messages(user: MaildirUserStore) -> None:
    put(user.folder("INBOX"))
    user.rename_folder("INBOX", "Old")
    assert len(user.folder("Old").uids()) == 1
    assert len(user.folder("INBOX").uids()) == 0


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../../etc",
        "a/../b",
        "/abs",
        "a//b",
        "x\x00y",
        "tab\there",
        ".hidden",
        "a" * 300,
        "/".join(["d"] * 40),
    ],
)
def test_names_cannot_escape_the_user_directory(user: MaildirUserStore, name: str) -> None:
    with pytest.raises(BadFolderName):
        user.create_folder(name)
    with pytest.raises(NoSuchFolder):
        user.folder(name)
    assert all(p.parent == user.root for p in user.root.iterdir())


def test_unicode_names_are_modified_utf7_on_disk(user: MaildirUserStore) -> None:
    user.create_folder("Entwürfe")
    assert (user.root / ".Entw&APw-rfe").is_dir()
    assert "Entwürfe" in user.list_folders()


def test_subscriptions(user: MaildirUserStore) -> None:
    user.subscribe("Nonexistent")
    user.unsubscribe("Sent")
    assert "Nonexistent" in user.subscriptions() and "Sent" not in user.subscriptions()


def test_take_recent_moves_new_to_cur_once(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    uid = put(folder)
    assert folder.recent_count() == 1
    assert folder.take_recent() == [uid]
    assert folder.take_recent() == []
    assert folder.recent_count() == 0
    assert os.listdir(folder.path / "new") == []
