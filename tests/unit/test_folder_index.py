"""The folder's search index (flags and keywords per UID, internal dates, sizes) agrees with a
message-by-message walk: as changes are made, in a second process reading the journal, after
outside changes, compaction and a rebuild; and SEARCH answered from it agrees with testing each
message."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from storehelp import on_reactor

from ourmail.imap.search import Candidate, parse_search
from ourmail.imap.wire import tokenize
from ourmail.store import folder as folder_mod
from ourmail.store.folder import MaildirFolder
from ourmail.store.userstore import MaildirStore, ensure_default_folders

FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "\\Deleted", "\\Draft", "$Work", "$Later"]
DAY = 86400.0
BASE = 1_780_000_000.0  # 28 May 2026, 20:26 UTC


def message(i: int) -> bytes:
    return b"From: a%d@b.c\r\nSubject: s%d\r\n\r\n" % (i, i) + b"body line\r\n" * (i % 7)


@pytest.fixture
def inbox(tmp_path: Path) -> MaildirFolder:
    user = MaildirStore(tmp_path).user("alice@example.org")
    ensure_default_folders(user)
    folder = user.folder("INBOX")
    assert isinstance(folder, MaildirFolder)
    return folder


def fill(folder: MaildirFolder, rng: random.Random, count: int) -> None:
    for i in range(count):
        flags = rng.sample(FLAGS, rng.randrange(3))
        date = BASE + rng.randrange(-5, 5) * DAY + rng.randrange(86400)
        on_reactor(folder.append, message(i), flags, date)


def shuffle_flags(folder: MaildirFolder, rng: random.Random, rounds: int) -> None:
    for _ in range(rounds):
        uids = rng.sample(list(folder.uids()), min(5, len(folder.uids())))
        flags = rng.sample(FLAGS, rng.randrange(1, 3))
        folder.store_flags(uids, flags, rng.choice("+-="))


def assert_index_agrees(folder: MaildirFolder) -> None:
    uids = list(folder.uids())
    messages = {u: folder.message(u) for u in uids}
    for flag in [*FLAGS, "$Unknown"]:
        walked = {u for u, m in messages.items() if flag in m.flags}
        assert set(folder.uids_with_flag(flag)) == walked, flag
        assert set(folder.uids_without_flag(flag)) == set(uids) - walked, flag
    assert folder.unseen_count() == sum("\\Seen" not in m.flags for m in messages.values())
    first = next((u for u in uids if "\\Seen" not in messages[u].flags), None)
    assert folder.first_unseen() == first
    for start, end in [(None, None), (BASE, None), (None, BASE), (BASE - DAY, BASE + 2 * DAY)]:
        walked = {
            u
            for u, m in messages.items()
            if (start is None or m.internal_date >= start)
            and (end is None or m.internal_date < end)
        }
        assert folder.uids_dated(start, end) == walked
    sizes = sorted(m.size for m in messages.values())
    for low, high in [(None, None), (sizes[len(sizes) // 2], None), (None, sizes[-1])]:
        walked = {
            u
            for u, m in messages.items()
            if (low is None or m.size >= low) and (high is None or m.size < high)
        }
        assert folder.uids_sized(low, high) == walked


def test_index_follows_changes(inbox: MaildirFolder) -> None:
    rng = random.Random(13)
    fill(inbox, rng, 40)
    assert_index_agrees(inbox)
    shuffle_flags(inbox, rng, 30)
    assert_index_agrees(inbox)
    inbox.expunge(rng.sample(list(inbox.uids()), 10))
    assert_index_agrees(inbox)
    fill(inbox, rng, 5)  # into an index already sorted by date and size
    assert_index_agrees(inbox)


def test_index_in_another_process_and_after_outside_changes(inbox: MaildirFolder) -> None:
    rng = random.Random(5)
    other = MaildirFolder(inbox.path, "INBOX")  # a second process's view of the folder
    fill(inbox, rng, 30)
    assert other.sync()
    assert_index_agrees(other)  # built from the journal's lines
    shuffle_flags(other, rng, 20)
    other.expunge(list(other.uids())[:3])
    inbox.sync()
    assert_index_agrees(inbox)
    # mutt flags a message by renaming its file: seen through the directory scan
    uid = inbox.uids()[0]
    entry = inbox.state.entries[uid]
    os.rename(inbox.path / entry.sub / entry.filename, inbox.path / "cur" / f"{entry.base}:2,FS")
    assert inbox.sync() and other.sync()
    assert inbox.uids_with_flag("\\Flagged") >= {uid}
    assert_index_agrees(inbox)
    assert_index_agrees(other)


def test_index_after_compaction_and_rebuild(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    monkeypatch.setattr(folder_mod, "COMPACT_SLACK", 10)
    fill(inbox, rng, 20)
    inode = os.stat(inbox.path / "ourmail-uidlist").st_ino
    shuffle_flags(inbox, rng, 20)  # compacts the journal on the way
    assert os.stat(inbox.path / "ourmail-uidlist").st_ino != inode
    assert_index_agrees(inbox)
    fresh = MaildirFolder(inbox.path, "INBOX")  # the compacted journal, read back
    assert fresh.state.entries == inbox.state.entries
    assert (fresh.uidnext, fresh.highestmodseq) == (inbox.uidnext, inbox.highestmodseq)
    assert not inbox.sync()  # nothing left to read: the compacted file is what it holds
    shuffle_flags(inbox, rng, 3)
    assert fresh.sync() and fresh.state.entries == inbox.state.entries
    (inbox.path / "ourmail-uidlist").write_text("garbage\n")
    rebuilt = MaildirFolder(inbox.path, "INBOX")
    assert len(rebuilt.uids()) == 20
    assert_index_agrees(rebuilt)


SEARCHES = [
    "ALL",
    "SEEN",
    "UNSEEN FLAGGED",
    "KEYWORD $Work",
    "UNKEYWORD $Later",
    "KEYWORD $Nothing",
    "NOT DELETED",
    "OR ANSWERED DRAFT",
    "OR (SEEN KEYWORD $Work) NOT FLAGGED",
    "SINCE 25-May-2026",
    "BEFORE 28-May-2026",
    "ON 29-May-2026",
    "SINCE 27-May-2026 BEFORE 31-May-2026 UNSEEN",
    "LARGER 60",
    "SMALLER 70",
    "NOT LARGER 55",
    "UID 3:9,15",
    "2:5 SEEN",
    "FROM a1 SEEN",
    "OR FROM a2 SUBJECT s3",
    "NOT FROM a1",
    "BODY line FLAGGED",
    "TEXT SUBJECT NOT SEEN",
    "RECENT",
    "NEW",
    "OLD LARGER 50",
    "UNSEEN",
    "UNDELETED",
    "NOT SEEN",
    "NOT UNSEEN",
    "FLAGGED SEEN",
    "OR UNSEEN DELETED",
    "OR FLAGGED UNDELETED",
    "UNKEYWORD $Nothing",
    "UNSEEN BODY line",
    "OR SEEN BODY line",
]


@pytest.mark.parametrize("pending", ["nothing", "an expunge", "a delivery"])
@pytest.mark.parametrize("text", SEARCHES)
def test_search_from_the_index_agrees_with_testing_each_message(
    inbox: MaildirFolder, text: str, pending: str
) -> None:
    """With the session's view the folder as it is (the index answers alone), and with an
    expunge or a delivery the session has not been told of yet."""
    rng = random.Random(text)
    fill(inbox, rng, 25)
    shuffle_flags(inbox, rng, 10)
    view = list(inbox.uids())
    if pending == "an expunge":
        inbox.expunge([view[4]])  # still in the session's view, gone from the folder
    elif pending == "a delivery":
        fill(inbox, rng, 2)  # in the folder, not yet in the session's view
    recent = set(view[-6:])
    search = parse_search(tokenize(text.encode(), []), len(view), view)
    walked = []
    for seq, uid in enumerate(view, 1):
        try:
            cand = Candidate(seq, uid in recent, inbox.message(uid))
        except KeyError:
            continue
        if search.predicate(cand):
            walked.append(uid)
    assert search.matching(inbox, view, recent) == walked
    # BODY and TEXT read in worker threads (the other keys as before)
    later = parse_search(tokenize(text.encode(), []), len(view), view)
    assert on_reactor(later.matching_later, inbox, view, recent) == walked


def test_body_search_in_threads_finds_a_file_renamed_meanwhile(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(inbox, random.Random(1), 12)
    monkeypatch.setattr(folder_mod, "SCAN_BATCH", 5)  # three batches
    view = list(inbox.uids())
    real = folder_mod._filter_files

    def renamed_first(jobs: list[tuple[int, str, int]], test: object) -> object:
        # another process flags the message after its path was taken
        uid, path, _ = jobs[0]
        os.rename(path, path.split(":2,")[0] + ":2,T")
        return real(jobs, test)  # type: ignore[arg-type]

    monkeypatch.setattr(folder_mod, "_filter_files", renamed_first)
    search = parse_search(tokenize(b"BODY LINE", []), len(view), view)
    expected = [u for u in view if b"body line" in inbox.message(u).read()]
    assert on_reactor(search.matching_later, inbox, view, set()) == expected
    assert len(expected) > 6
