"""A folder opened from its checkpoint (``ourmail-index``) is exactly the fold of its journal:
after deliveries, flag changes, expunges, ``\\Recent`` claims, compaction and changes made on
top of a checkpoint; and a checkpoint that does not match its journal or cache (replaced,
rewritten in place, corrupt, truncated, garbage, copied from another folder) is left aside
without an error."""

from __future__ import annotations

import json
import os
import random
import shutil
import zlib
from array import array
from pathlib import Path
from typing import Any

import pytest
from storehelp import drop, on_reactor
from test_folder_index import FLAGS, assert_index_agrees, fill, shuffle_flags

from ourmail.store import checkpoint
from ourmail.store import folder as folder_mod
from ourmail.store import journal as journal_mod
from ourmail.store.entrytable import Columns, Entry, EntryTable
from ourmail.store.folder import MaildirFolder
from ourmail.store.userstore import MaildirStore, ensure_default_folders


@pytest.fixture
def inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MaildirFolder:
    """An INBOX whose checkpoints are written at a few messages and lines, not thousands,
    and keep a few changes for sessions catching up."""
    monkeypatch.setattr(checkpoint, "CHANGES", 10)
    monkeypatch.setattr(folder_mod, "CHECKPOINT_MIN", 5)
    monkeypatch.setattr(folder_mod, "CHECKPOINT_LINES", 8)
    user = MaildirStore(tmp_path).user("alice@example.org")
    ensure_default_folders(user)
    folder = user.folder("INBOX")
    assert isinstance(folder, MaildirFolder)
    return folder


def observed(folder: MaildirFolder) -> dict[str, Any]:
    """Everything a protocol can see of a folder's state."""
    s = folder.state
    uids = list(folder.uids())
    entries = {u: attrs_of(s.entries[u]) for u in uids}
    return {
        "numbers": (s.uidvalidity, s.uidnext, s.highestmodseq, s.first_recent, s.total_size),
        "entries": entries,
        "letters": {ch: set(u) for ch, u in s.letter_sets()[0].items() if u},
        "lacking": {ch: set(u) for ch, u in s.letter_sets()[1].items()},
        "by_date": folder.uids_ordered("date"),
        "by_size": folder.uids_ordered("size"),
        "by_base": dict(s.by_base),
        "recent": folder.recent_count(),
        "summaries": {u: folder.message(u).summary().to_record() for u in uids},
        "stamp": s.stamp,
    }


def attrs_of(e: Entry) -> tuple[Any, ...]:
    return (e.uid, e.base, e.sub, e.info, e.modseq, e.size, e.date)


def from_scratch(path: Path, monkeypatch: pytest.MonkeyPatch) -> MaildirFolder:
    """The folder as a fold of its whole journal, its checkpoint not read (nor written)."""
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "read", lambda *a: None)
        m.setattr(folder_mod, "CHECKPOINT_MIN", 1 << 30)
        return MaildirFolder(path, "INBOX")


def opened_from_checkpoint(path: Path, monkeypatch: pytest.MonkeyPatch) -> MaildirFolder:
    """The folder opened again; asserts that its checkpoint was used."""
    offsets: list[int] = []
    real = folder_mod._fold_tail

    def spy(p: Path, offset: int, *args: Any) -> int:
        offsets.append(offset)
        return real(p, offset, *args)

    with monkeypatch.context() as m:
        m.setattr(folder_mod, "_fold_tail", spy)
        folder = MaildirFolder(path, "INBOX")
    assert not offsets or offsets[0] > 0, "the journal was folded from its start"
    return folder


def agree(a: MaildirFolder, b: MaildirFolder) -> None:
    assert observed(a) == observed(b)
    for modseq in range(0, a.highestmodseq + 2, 7):
        mine, theirs = a.changes_since(modseq), b.changes_since(modseq)
        if mine is not None and theirs is not None:
            assert sorted(set(mine)) == sorted(set(theirs)), modseq


def test_a_folder_opened_from_its_checkpoint_is_the_fold_of_its_journal(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(21)
    fill(inbox, rng, 30)
    assert (inbox.path / checkpoint.FILE_NAME).exists()
    current = inbox
    for round_ in range(6):
        # Changes on top of a checkpoint: flags and expunges of messages still in its
        # columns, new deliveries (through the store's folder, which has the committer),
        # a \Recent claim.
        shuffle_flags(current, rng, 6)
        current.expunge(rng.sample(list(current.uids()), 3))
        fill(inbox, rng, rng.randrange(1, 9))
        current.sync()
        if round_ % 2:
            current.claim_recent()
        reopened = opened_from_checkpoint(inbox.path, monkeypatch)
        scratch = from_scratch(inbox.path, monkeypatch)
        agree(reopened, scratch)
        agree(current, scratch)
        assert_index_agrees(reopened)
        current = reopened


def test_a_checkpoint_after_compaction_and_a_stale_one_left_aside(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_mod, "COMPACT_SLACK", 10)
    rng = random.Random(3)
    fill(inbox, rng, 20)
    stale = (inbox.path / checkpoint.FILE_NAME).read_bytes()
    inode = os.stat(inbox.path / "ourmail-uidlist").st_ino
    shuffle_flags(inbox, rng, 30)  # compacts the journal, and checkpoints the new one
    assert os.stat(inbox.path / "ourmail-uidlist").st_ino != inode
    agree(opened_from_checkpoint(inbox.path, monkeypatch), from_scratch(inbox.path, monkeypatch))
    (inbox.path / checkpoint.FILE_NAME).write_bytes(stale)  # of the journal replaced
    agree(MaildirFolder(inbox.path, "INBOX"), from_scratch(inbox.path, monkeypatch))


def test_a_journal_rewritten_in_place_is_not_taken_for_the_checkpointed_one(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(inbox, random.Random(4), 12)
    journal = inbox.path / "ourmail-uidlist"
    data = journal.read_bytes()
    # Same inode, same length, another generation: what a reused inode number looks like.
    head, rest = data.split(b"\n", 1)
    fields = head.split(b"\t")
    fields[-1] = b"G" + b"7" * (len(fields[-1]) - 1)
    with open(journal, "r+b") as f:
        f.write(b"\t".join(fields) + b"\n" + rest)
    assert checkpoint.read(inbox.path, os.open(journal, os.O_RDONLY), None) is None


def signed(rest: bytes) -> bytes:
    """A checkpoint file of ``rest`` (header line and sections) with a right checksum."""
    return checkpoint.MAGIC + b"%08x\n" % zlib.crc32(rest) + rest


def corruptions(data: bytes, rng: random.Random) -> list[bytes]:
    first_end = data.index(b"\n") + 1
    header_end = data.index(b"\n", first_end)
    header, payload = json.loads(data[first_end:header_end]), data[header_end + 1 :]

    def edited(**changes: Any) -> bytes:
        return signed(json.dumps({**header, **changes}).encode() + b"\n" + payload)

    flipped = bytearray(data)
    flipped[len(data) - 5] ^= 0x40
    renumbered = bytearray(data)
    at = data.index(b'"uidnext":') + len(b'"uidnext":')
    renumbered[at] = ord("9") if data[at] != ord("9") else ord("8")
    uids = header["sections"]["uids"]
    return [
        b"",
        data[: len(data) // 2],
        data[:header_end],
        bytes(flipped),
        bytes(renumbered),  # the header is under the checksum too
        checkpoint.MAGIC + b"00000000\n{}\n",
        signed(b"{}\n"),
        signed(b"[1,2]\n"),
        signed(b"[" * 100_000 + b"\n"),
        signed(b"x" * (checkpoint.MAX_HEADER + 10)),
        edited(sections=[1, 2]),
        edited(sections={**header["sections"], "uids": ["q", 10**9, uids[2]]}),
        edited(sections={"uids": uids, "again": uids}),
        edited(sections={**header["sections"], "modseqs": uids}),  # overlapping
        edited(journal={**header["journal"], "inode": 10**400}),
        edited(numbers={**header["numbers"], "uidnext": "many"}),
        edited(byteorder="big" if header["byteorder"] == "little" else "little"),
        data.replace(b"ourmail-index 2", b"ourmail-index 9", 1),
        rng.randbytes(5000),
        checkpoint.MAGIC + rng.randbytes(5000),
    ]


def test_a_corrupt_checkpoint_is_left_aside(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(8)
    fill(inbox, rng, 12)
    scratch = from_scratch(inbox.path, monkeypatch)
    good = (inbox.path / checkpoint.FILE_NAME).read_bytes()
    for bad in corruptions(good, rng):
        (inbox.path / checkpoint.FILE_NAME).write_bytes(bad)
        fd = os.open(inbox.path / "ourmail-uidlist", os.O_RDONLY)
        try:
            assert checkpoint.read(inbox.path, fd, None) is None, bad[:80]
        finally:
            os.close(fd)
        agree(from_scratch(inbox.path, monkeypatch), scratch)
        agree(MaildirFolder(inbox.path, "INBOX"), scratch)  # and writes a good one again


def test_a_checkpoint_copied_from_another_folder_is_left_aside(
    inbox: MaildirFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(9)
    fill(inbox, rng, 12)
    other = MaildirStore(tmp_path / "other").user("bob@example.org")
    ensure_default_folders(other)
    theirs = other.folder("INBOX")
    assert isinstance(theirs, MaildirFolder)
    fill(theirs, rng, 15)
    shutil.copy(theirs.path / checkpoint.FILE_NAME, inbox.path / checkpoint.FILE_NAME)
    agree(MaildirFolder(inbox.path, "INBOX"), from_scratch(inbox.path, monkeypatch))


def test_summary_offsets_are_left_aside_when_the_cache_was_replaced(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(10)
    fill(inbox, rng, 12)
    reopened = opened_from_checkpoint(inbox.path, monkeypatch)
    assert reopened.cache._base is not None  # the offsets came from the checkpoint
    summaries = {u: reopened.message(u).summary().to_record() for u in reopened.uids()}
    # Another process rewrote the cache: the lines are elsewhere now.
    cache = inbox.path / "ourmail-cache"
    lines = cache.read_bytes().splitlines(keepends=True)
    cache.unlink()
    cache.write_bytes(b"".join(reversed(lines)))
    again = MaildirFolder(inbox.path, "INBOX")
    assert again.cache._base is None
    assert {u: again.message(u).summary().to_record() for u in again.uids()} == summaries


def test_a_checkpoint_is_written_for_a_large_folder_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_mod, "CHECKPOINT_LINES", 4)
    user = MaildirStore(tmp_path).user("carol@example.org")
    ensure_default_folders(user)
    folder = user.folder("INBOX")
    assert isinstance(folder, MaildirFolder)
    fill(folder, random.Random(2), 6)
    assert not (folder.path / checkpoint.FILE_NAME).exists()  # 6 < CHECKPOINT_MIN


# -- the table of entries on its own -----------------------------------------------------------


def entry(uid: int, rng: random.Random) -> Entry:
    info = rng.choice([None, "", "S", "FS", "Sab"])
    return Entry(uid, f"{uid}.M{rng.randrange(10**6)}.host,S={uid * 3}", rng.choice(["new", "cur"]),
                 info, uid, uid * 3, 1.78e9 + uid)  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_the_entry_table_behaves_as_a_dictionary(seed: int) -> None:
    rng = random.Random(seed)
    start = [entry(u, rng) for u in sorted(rng.sample(range(1, 400), 120))]
    model = {e.uid: e for e in start}
    table = EntryTable(Columns.of(start))
    uid = max(model)
    for _ in range(400):
        op = rng.random()
        if op < 0.3 and model:
            victim = rng.choice(list(model))
            assert table.pop(victim) == model.pop(victim)
        elif op < 0.5:
            uid += rng.randrange(1, 4)
            model[uid] = table[uid] = entry(uid, rng)
        elif op < 0.8 and model:
            known = rng.choice(list(model))
            table[known].info = model[known].info = rng.choice([None, "T", "Sa"])
            table[known].modseq = model[known].modseq = model[known].modseq + 1000
        else:
            probe = rng.randrange(0, uid + 3)
            assert (probe in table) == (probe in model)
            assert table.get(probe) == model.get(probe)
        assert len(table) == len(model)
    assert list(table) == sorted(model)
    assert table.values_of("date") == [model[u].date for u in sorted(model)]
    again = EntryTable(table.columns())
    assert dict(again.items()) == model
    assert table.pop(10**6, None) is None and table.get("x") is None  # type: ignore[arg-type]
    for missing in (lambda: table.pop(10**6), lambda: table.__delitem__(10**6)):
        with pytest.raises(KeyError):
            missing()
    assert table.keys() - {1, 2} == set(model) - {1, 2}
    assert {1, 2, uid} & table.keys() == {1, 2, uid} & set(model)


def test_columns_round_trip_unusual_names() -> None:
    entries = [Entry(1, "päth,S=5", "new", None, 1, 5, 1.5), Entry(7, "x", "cur", "", 2, 0, 0.0)]
    cols = Columns.of(entries)
    assert [cols.entry(i) for i in range(len(cols))] == entries
    assert cols.row(7) == 1 and cols.row(3) == -1
    assert isinstance(cols.uids, array)


def test_flags_of_messages_in_the_checkpoint_can_be_changed(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(inbox, random.Random(1), 12)
    reopened = opened_from_checkpoint(inbox.path, monkeypatch)
    uids = list(reopened.uids())[:4]
    on_reactor(reopened.store_flags, uids, FLAGS[:2], "=")
    assert all(reopened.message(u).flags >= set(FLAGS[:2]) for u in uids)
    agree(reopened, from_scratch(inbox.path, monkeypatch))


def test_a_message_whose_name_claims_an_absurd_size_does_not_stop_the_folder(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(inbox, random.Random(11), 12)
    drop(inbox.path, b"Subject: odd\r\n\r\nbody\r\n", name="1.odd.host,W=99999999999999999999")
    assert inbox.sync()
    fill(inbox, random.Random(12), 10)  # enough lines for another checkpoint
    again = MaildirFolder(inbox.path, "INBOX")
    assert len(again.uids()) == 23
    agree(again, from_scratch(inbox.path, monkeypatch))


def test_base_names_are_indexed_without_making_every_message(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(inbox, random.Random(13), 12)
    reopened = opened_from_checkpoint(inbox.path, monkeypatch)
    scratch = from_scratch(inbox.path, monkeypatch)
    for uid in scratch.uids():
        assert reopened.uid_of(scratch.state.entries[uid].base) == uid
    assert not reopened.state.entries._made  # the columns gave the names


def test_a_checkpoint_of_a_replaced_journal_never_overwrites_the_new_one(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_mod, "COMPACT_SLACK", 10)
    rng = random.Random(14)
    fill(inbox, rng, 20)
    late = MaildirFolder(inbox.path, "INBOX")  # another process, about to write one
    shuffle_flags(inbox, rng, 30)  # compacts the journal and checkpoints the new one
    fresh = (inbox.path / checkpoint.FILE_NAME).read_bytes()
    late._checkpoint()  # of the journal it folded, which is gone
    assert (inbox.path / checkpoint.FILE_NAME).read_bytes() == fresh
    assert not [p for p in (inbox.path / "tmp").iterdir() if "index" in p.name]
    assert not [p for p in inbox.path.iterdir() if p.name.startswith(".ourmail-index")]


def test_a_failed_checkpoint_write_leaves_no_file_and_no_error(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(inbox, random.Random(15), 12)
    before = (inbox.path / checkpoint.FILE_NAME).read_bytes()

    def full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(folder_mod.os, "replace", full)
        inbox._checkpoint()
    assert (inbox.path / checkpoint.FILE_NAME).read_bytes() == before
    assert not list((inbox.path / "tmp").iterdir())


def test_a_compaction_elsewhere_keeps_the_summary_offsets_read(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_mod, "COMPACT_SLACK", 10)
    rng = random.Random(16)
    fill(inbox, rng, 20)
    other = MaildirFolder(inbox.path, "INBOX")
    for uid in other.uids():
        other.message(uid).summary()
    read = other.cache._read_to
    shuffle_flags(inbox, rng, 30)  # compacts
    assert other.sync()
    assert other.cache._read_to >= read > 0
    agree(other, from_scratch(inbox.path, monkeypatch))


def test_changes_after_a_compaction_are_never_missed(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compacted journal lists its messages by UID, not by modseq: sessions catching up
    (CONDSTORE, QRESYNC) still hear of every change after their modseq, or are told to
    compare everything (None)."""
    monkeypatch.setattr(folder_mod, "COMPACT_SLACK", 10)
    monkeypatch.setattr(journal_mod, "CHANGE_LOG", 16)
    rng = random.Random(17)
    fill(inbox, rng, 20)
    shuffle_flags(inbox, rng, 30)  # compacts: the messages' modseqs are now out of order

    def told_everything(folder: MaildirFolder) -> None:
        for since in range(folder.highestmodseq + 1):
            told = folder.changes_since(since)
            if told is not None:
                changed = {u for u in folder.uids() if folder.state.entries[u].modseq > since}
                assert changed <= set(told), since

    for folder in (from_scratch(inbox.path, monkeypatch), inbox):
        told_everything(folder)
        folder.store_flags([1], ["$Work"], "+")
        folder.store_flags(list(folder.uids())[-3:], ["$Later"], "+")
        told_everything(folder)


def test_a_new_journal_under_a_reused_inode_number_is_not_taken_for_the_old(
    inbox: MaildirFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A freed inode number comes back: a journal compacted twice may get the number of the
    one another process folded.  Its first line (the generation) tells them apart, for the
    fold and for the checkpoint."""
    monkeypatch.setattr(folder_mod, "COMPACT_SLACK", 10)
    rng = random.Random(15)
    fill(inbox, rng, 20)
    late = MaildirFolder(inbox.path, "INBOX")
    shuffle_flags(inbox, rng, 30)  # compacts the journal
    fresh = (inbox.path / checkpoint.FILE_NAME).read_bytes()
    late._inode = os.stat(inbox.path / "ourmail-uidlist").st_ino  # as if the number came back
    late._checkpoint()
    assert (inbox.path / checkpoint.FILE_NAME).read_bytes() == fresh
    fill(inbox, rng, 1)  # the journal grows past what the late process folded
    late.sync()
    agree(late, from_scratch(inbox.path, monkeypatch))
