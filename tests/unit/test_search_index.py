"""The header search index (``ourmail-search``): answers like the summaries do, never opens a
message, converts old folders, and never outlives a UID renumbering."""

from __future__ import annotations

from pathlib import Path

import pytest
from storehelp import drop, on_reactor

from ourmail.store import folder as folder_mod
from ourmail.store.cache import SEARCH_FILE
from ourmail.store.folder import MaildirFolder
from ourmail.store.memory import MemoryFolder
from ourmail.store.userstore import MaildirStore

MESSAGES = [
    b"From: Bob Smith <bob@x.org>\r\nTo: alice@example.org\r\nSubject: Lunch\r\n\r\nx\r\n",
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@y.de>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nx\r\n",
    b"From: carol@z.net\r\nCc: Bob <bob@x.org>\r\nSubject: lunch\x1fat noon\r\n\r\nx\r\n",
    b"Subject: no sender\r\n\r\nx\r\n",
]
QUERIES = [
    ("from", "bob"), ("from", "jürgen"), ("cc", "bob@x.org"), ("subject", "lunch"),
    ("subject", "grüße"), ("to", "alice"), ("from", "nobody"), ("bcc", "x"), ("subject", "noon"),
]  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> MaildirFolder:
    inbox = MaildirStore(tmp_path).user("alice@example.org").folder("INBOX")
    for data in MESSAGES:
        on_reactor(inbox.append, data, ())
    return inbox


def test_answers_match_the_in_memory_store(folder: MaildirFolder) -> None:
    memory = MemoryFolder("INBOX")
    for data in MESSAGES:
        memory.append(data)
    for field, needle in QUERIES:
        assert folder.search_headers(field, needle) == memory.search_headers(field, needle)
    assert folder.search_headers("from", "bob") == {1}
    assert folder.search_headers("subject", "grüße") == {2}


def test_never_opens_a_message(folder: MaildirFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder_mod.StoredMessage, "read", lambda self: pytest.fail("file read"))
    fresh = MaildirFolder(folder.path, "INBOX")
    assert fresh.search_headers("subject", "lunch") == {1, 3}


def test_expunged_messages_are_not_found(folder: MaildirFolder) -> None:
    folder.expunge([1])
    assert folder.search_headers("from", "bob") == set()


def test_a_folder_from_before_the_index_is_converted(folder: MaildirFolder) -> None:
    (folder.path / SEARCH_FILE).unlink()
    assert MaildirFolder(folder.path, "INBOX").search_headers("cc", "bob") == {3}
    assert (folder.path / SEARCH_FILE).exists()


def test_messages_without_a_summary_get_one(folder: MaildirFolder) -> None:
    drop(folder.path, b"From: dave@w.org\r\nSubject: dropped in\r\n\r\nx\r\n")
    folder.sync()
    assert folder.search_headers("from", "dave") == {5}


def test_a_rebuild_with_new_uids_forgets_the_old_index(folder: MaildirFolder) -> None:
    folder.expunge([1, 2])
    (folder.path / "ourmail-uidlist").write_text("garbage\n")  # rebuilt: UIDs 1, 2 again
    rebuilt = MaildirFolder(folder.path, "INBOX")
    assert len(rebuilt.uids()) == 2
    assert rebuilt.search_headers("from", "bob") == set()  # old UID 1 was Bob's
    assert rebuilt.search_headers("from", "carol") == {1}
    assert rebuilt.message(1).summary().headers["from"] == "carol@z.net"


def test_an_index_left_by_a_cut_short_clear_is_dropped(folder: MaildirFolder) -> None:
    (folder.path / "ourmail-cache").unlink()  # clear() removes the cache first
    fresh = MaildirFolder(folder.path, "INBOX")
    assert fresh.search_headers("from", "bob") == {1}
    assert fresh.search_headers("from", "carol") == {3}
