"""The Maildir store: files, the journal, UIDs, flags, outside changes, unsafe names."""

import os
from pathlib import Path

import pytest
from storehelp import drop, on_reactor
from twisted.internet import defer
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
from ourmail.mime.outline import Address
from ourmail.store import folder as folder_mod
from ourmail.store import maildir
from ourmail.store.folder import MaildirFolder
from ourmail.store.shards import ShardMap, shard_of
from ourmail.store.userstore import MaildirStore, MaildirUserStore, ensure_default_folders

MSG = b"From: a@b.c\r\nSubject: test\r\n\r\nbody\r\n"


@pytest.fixture
def user(tmp_path: Path) -> MaildirUserStore:
    u = MaildirStore(tmp_path).user("alice@example.org")
    ensure_default_folders(u)
    return u


def append(folder: MaildirFolder, data: bytes = MSG, flags: tuple[str, ...] = ()) -> int:
    return on_reactor(folder.append, data, flags)


def test_interfaces(user: MaildirUserStore) -> None:
    verifyObject(IMailStore, user.store)
    verifyObject(IUserStore, user)
    folder = user.folder("INBOX")
    verifyObject(IFolder, folder)
    verifyObject(IStoredMessage, folder.message(append(folder)))


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


def test_append_is_a_durable_maildir_file_with_size(user: MaildirUserStore) -> None:
    folder = user.folder("inbox")
    uid = append(folder)
    (name,) = os.listdir(folder.path / "new")
    assert f",S={len(MSG)},W={len(MSG)}" in name
    assert os.listdir(folder.path / "tmp") == []
    msg = folder.message(uid)
    assert msg.read() == MSG and msg.size == len(MSG) and msg.flags == frozenset()
    assert folder.uidnext == uid + 1
    assert on_reactor(folder.append, MSG, ["\\Seen", "\\Draft"]) == uid + 1
    assert any(n.endswith(":2,DS") for n in os.listdir(folder.path / "cur"))


def test_group_commit_under_concurrency(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")

    def many() -> defer.Deferred:
        return defer.gatherResults([folder.append(MSG + b"%d\r\n" % i) for i in range(200)])

    uids = on_reactor(many)
    assert sorted(uids) == list(range(1, 201))
    assert len(os.listdir(folder.path / "new")) == 200
    again = MaildirFolder(folder.path, "INBOX")
    assert list(again.uids()) == list(range(1, 201))
    for uid in (1, 77, 200):
        assert again.message(uid).read() == folder.message(uid).read()


def test_flags_are_maildir_letters_and_dovecot_keywords(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    uid = append(folder)
    assert folder.store_flags([uid], ["\\SEEN", "$Forwarded", "\\Flagged"], "+") == {
        uid: frozenset({"\\Seen", "$Forwarded", "\\Flagged"})
    }
    (name,) = os.listdir(folder.path / "cur")
    assert name.endswith(":2,FSa")
    assert (folder.path / "dovecot-keywords").read_text() == "0 $Forwarded\n"
    assert folder.keywords() == ["$Forwarded"]
    folder.store_flags([uid], ["\\Flagged"], "-")
    assert folder.message(uid).flags == {"\\Seen", "$Forwarded"}
    folder.store_flags([uid], [], "=")
    assert folder.message(uid).flags == frozenset()
    assert folder.first_unseen() == uid and folder.unseen_count() == 1


def test_modseq_grows_with_every_change(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    start = folder.highestmodseq
    uid = append(folder)
    after_add = folder.highestmodseq
    folder.store_flags([uid], ["\\Seen"], "+")
    after_flag = folder.highestmodseq
    assert start < after_add < after_flag == folder.message(uid).modseq
    assert folder.changes_since(start) == [uid, uid]
    folder.expunge([uid])
    assert folder.highestmodseq > after_flag
    assert folder.changes_since(after_flag) == [uid]


def test_another_process_sees_changes_through_the_journal(
    user: MaildirUserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = user.folder("INBOX")
    b = MaildirFolder(a.path, "INBOX")  # a second process's view of the same folder
    uid = append(a)
    scans = []
    real_scan = MaildirFolder._scan
    monkeypatch.setattr(MaildirFolder, "_scan", lambda self: scans.append(1) or real_scan(self))
    assert b.sync()
    assert list(b.uids()) == [uid]
    a.store_flags([uid], ["\\Flagged"], "+")
    assert b.sync() and b.message(uid).flags == {"\\Flagged"}
    b.expunge([uid])
    assert a.sync() and list(a.uids()) == []
    assert scans == []  # no directory scan: every change came through the journal
    assert not a.sync() and not b.sync()


def test_outside_changes_are_seen(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    uid = append(folder)
    entry = folder.state.entries[uid]
    # A delivery agent drops a file with LF endings; mutt marks the first message seen.
    drop(folder.path, b"Subject: x\n\nLF only\n", name="1700000000.other.host")
    os.rename(folder.path / "new" / entry.filename, folder.path / "cur" / f"{entry.base}:2,S")
    assert folder.sync()
    assert len(folder.uids()) == 2
    assert folder.message(uid).flags == {"\\Seen"}
    other = folder.uids()[1]
    assert folder.message(other).read() == b"Subject: x\r\n\r\nLF only\r\n"
    assert folder.message(other).size == len(b"Subject: x\r\n\r\nLF only\r\n")
    os.unlink(folder.path / "cur" / f"{entry.base}:2,S")
    assert folder.sync()
    assert list(folder.uids()) == [other]
    assert not folder.sync()


def test_uids_survive_reopening_and_rebuild_after_loss(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    uids = [append(folder) for _ in range(3)]
    again = MaildirFolder(folder.path, "INBOX")
    assert list(again.uids()) == uids and again.uidvalidity == folder.uidvalidity
    (folder.path / "ourmail-uidlist").write_text("garbage\n")
    rebuilt = MaildirFolder(folder.path, "INBOX")
    assert len(rebuilt.uids()) == 3
    assert rebuilt.uidvalidity > folder.uidvalidity
    (folder.path / "ourmail-uidlist").unlink()
    assert len(MaildirFolder(folder.path, "INBOX").uids()) == 3


def test_a_rebuild_numbers_messages_in_delivery_order(user: MaildirUserStore) -> None:
    # Same second, microseconds of different lengths: text order would put M4836 first.
    names = [
        "1795462609.M637P28836Q9.host",
        "1795462609.M4836P28836Q10.host",
        "1795462609.M4836P28836Q11.host",
        "1795462610.M5P1Q1.host",
        "1795462610.M12P1Q2.other",
    ]
    folder = user.folder("INBOX")
    for name in reversed(names):
        (folder.path / "cur" / f"{name}:2,").write_bytes(MSG)
    (folder.path / "ourmail-uidlist").unlink(missing_ok=True)
    rebuilt = MaildirFolder(folder.path, "INBOX")
    assert [rebuilt.message(u).key.split(":")[0] for u in rebuilt.uids()] == names


def test_modseqs_grow_across_processes(tmp_path: Path) -> None:
    # Another process's expunges and flag changes spend modseqs; an append here must number
    # its change above them, or a client that knows the highest modseq misses it.
    here = MaildirStore(tmp_path).user("alice@example.org")
    ensure_default_folders(here)
    there = MaildirStore(tmp_path).user("alice@example.org")
    mine = here.folder("INBOX")
    for _ in range(4):
        append(mine)
    theirs = there.folder("INBOX")
    theirs.sync()
    on_reactor(theirs.move_to, [2, 3], there.folder("Archive"))
    theirs.store_flags([4], ["\\Seen"], "+")
    seen = theirs.highestmodseq
    uid = append(mine)
    assert mine.message(uid).modseq > seen
    assert theirs.sync() and theirs.highestmodseq > seen and uid in theirs.uids()


def test_a_copy_follows_a_rename_and_skips_only_what_was_expunged(tmp_path: Path) -> None:
    # "There" has not read the journal since "here" flagged 1 (its file renamed) and
    # expunged 2: copying 1, 2 and 3 from there copies 1 and 3, and 2 fails alone.
    here = MaildirStore(tmp_path).user("alice@example.org")
    ensure_default_folders(here)
    mine = here.folder("INBOX")
    uids = [append(mine, MSG + b"%d\r\n" % n) for n in range(3)]
    there = MaildirStore(tmp_path).user("alice@example.org")
    theirs = there.folder("INBOX")
    theirs.sync()
    mine.store_flags([uids[0]], ["\\Seen"], "+")
    mine.expunge([uids[1]])
    pairs = on_reactor(theirs.copy_to, uids, there.folder("Archive"))
    assert [source for source, _ in pairs] == [uids[0], uids[2]]
    archive = there.folder("Archive")
    copied = [archive.message(new).read() for _, new in pairs]
    assert copied == [MSG + b"0\r\n", MSG + b"2\r\n"]


def test_a_torn_last_journal_line_is_ignored(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    uids = [append(folder) for _ in range(2)]
    with open(folder.path / "ourmail-uidlist", "a") as f:
        f.write("+\t99\t9")  # a crash in the middle of an append
    again = MaildirFolder(folder.path, "INBOX")
    assert list(again.uids()) == uids and again.uidvalidity == folder.uidvalidity


def test_journal_is_compacted(user: MaildirUserStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder_mod, "COMPACT_SLACK", 10)
    folder = user.folder("INBOX")
    uid = append(folder)
    validity = folder.uidvalidity
    for _ in range(20):
        folder.store_flags([uid], ["\\Seen"], "+")
        folder.store_flags([uid], ["\\Seen"], "-")
    lines = (folder.path / "ourmail-uidlist").read_text().splitlines()
    assert len(lines) < 20
    again = MaildirFolder(folder.path, "INBOX")
    assert list(again.uids()) == [uid] and again.uidvalidity == validity
    assert again.highestmodseq == folder.highestmodseq


def test_summaries_come_from_the_cache(
    user: MaildirUserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = user.folder("INBOX")
    uid = append(folder, b"From: Bob <b@x.org>\r\nSubject: hello\r\n\r\nhi\r\n")
    monkeypatch.setattr(folder_mod.StoredMessage, "read", lambda self: pytest.fail("file read"))
    summary = MaildirFolder(folder.path, "INBOX").message(uid).summary()
    assert summary.envelope.subject == "hello"
    assert summary.envelope.from_ == (Address("Bob", "b", "x.org"),)
    assert summary.headers["subject"] == "hello"
    assert (summary.body.maintype, summary.body.subtype) == ("text", "plain")


def test_summary_of_an_outside_message_is_computed_once(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    drop(folder.path, b"Subject: dropped\r\n\r\nx\r\n")
    folder.sync()
    (uid,) = folder.uids()
    assert folder.message(uid).summary().headers["subject"] == "dropped"
    assert b"dropped" in (folder.path / "ourmail-cache").read_bytes()


def test_recent_is_claimed_once(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    uid = append(folder)
    assert folder.recent_count() == 1
    assert folder.claim_recent() == [uid]
    assert folder.claim_recent() == []
    assert folder.recent_count() == 0
    assert MaildirFolder(folder.path, "INBOX").claim_recent() == []


def test_expunge_copy_and_listeners(user: MaildirUserStore) -> None:
    folder = user.folder("INBOX")
    calls = []
    folder.add_listener(lambda: calls.append(1))
    uid = append(folder, flags=("$Work",))
    assert calls
    pairs = on_reactor(folder.copy_to, [uid], user.folder("Archive"))
    archive = user.folder("Archive")
    assert archive.message(pairs[0][1]).flags == {"$Work"}
    assert archive.message(pairs[0][1]).read() == MSG
    assert folder.expunge([uid, 999]) == [uid]
    assert list(folder.uids()) == []
    assert os.listdir(folder.path / "cur") == []
    on_reactor(archive.move_to, list(archive.uids()), user.folder("Trash"))
    assert list(archive.uids()) == [] and len(user.folder("Trash").uids()) == 1


def test_leftovers_in_tmp_are_cleaned(user: MaildirUserStore) -> None:
    path = user.folder("INBOX").path
    old = path / "tmp" / "1.crashed"
    old.write_bytes(b"half")
    os.utime(old, (1, 1))
    fresh = path / "tmp" / "2.inflight"
    fresh.write_bytes(b"x")
    MaildirFolder(path, "INBOX")
    assert not old.exists() and fresh.exists()


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
    append(user.folder("INBOX"))
    user.rename_folder("INBOX", "Old")
    assert len(user.folder("Old").uids()) == 1
    assert len(user.folder("INBOX").uids()) == 0


@pytest.mark.parametrize(
    "name",
    ["..", "../../etc", "a/../b", "/abs", "a//b", "x\x00y", "tab\there", ".hidden", "a" * 300,
     "/".join(["d"] * 40)],
)  # fmt: skip
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


@pytest.mark.parametrize("local", ["alice/.Sent", "alice/..", "a%2Fb", "a/b"])
def test_local_parts_stay_one_directory(tmp_path: Path, local: str) -> None:
    shards = ShardMap(tmp_path)
    path = shards.user_dir(f"{local}@example.org")
    assert path.parent.name == "example.org" and "/" not in path.name
    assert path != shards.user_dir("alice@example.org").joinpath(".Sent")
    assert len({shards.user_dir(f"{x}@example.org") for x in ("a/b", "a%2Fb")}) == 2


def test_keyword_file_is_bounded_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "dovecot-keywords").write_text("0 $Work\n999999999 $Huge\n2 Later\nbad line\n")
    words = maildir.read_keywords(tmp_path)
    assert words == ["$Work", "", "Later"]
    assert maildir.flags_from_info("Sac", words) == {"\\Seen", "$Work", "Later"}
    maildir.write_keywords(tmp_path, words)
    assert (tmp_path / "dovecot-keywords").read_text() == "0 $Work\n2 Later\n"


def test_the_store_commits_on_the_reactor_it_was_given(tmp_path: Path) -> None:
    from twisted.internet import reactor

    calls: list[str] = []

    class Recording:
        """The global reactor, noting the timers the committer sets."""

        def __getattr__(self, name: str) -> object:
            return getattr(reactor, name)

        def callLater(self, *args: object) -> object:
            calls.append("callLater")
            return reactor.callLater(*args)

    store = MaildirStore(tmp_path, Recording())  # type: ignore[arg-type]
    folder = store.user("alice@example.org").folder("INBOX")
    uid = append(folder)
    assert calls and folder.message(uid).read() == MSG
    assert MaildirStore(tmp_path).committer is not store.committer
    with pytest.raises(StoreError):
        MaildirFolder(folder.path, "INBOX").append(MSG)
