"""The vault's capture in the store's group commit: join, catalog, dedup, failure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from storehelp import on_reactor
from twisted.internet import defer
from zope.interface import implementer

from ourmail.config import ConfigError, VaultSettings, load_settings
from ourmail.fsutil import HAVE_SYNCFS
from ourmail.interfaces import ICommitParticipant, VaultEnvelope
from ourmail.store.userstore import MaildirStore, MaildirUserStore
from ourmail.vault.catalog import FILE, Catalog, Expired, NotAMessage
from ourmail.vault.segments import SegmentLog
from ourmail.vault.vault import Vault, open_vault, split_message

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nthe body\r\n"


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    return MaildirStore(tmp_path)


@pytest.fixture
def vault(tmp_path: Path, store: MaildirStore) -> Vault:
    return open_vault(tmp_path / "vault", (), store.committer)


def inbox_files(user: MaildirUserStore) -> list[str]:
    inbox = user.folder("INBOX").path
    return os.listdir(inbox / "new") + os.listdir(inbox / "tmp")


def test_split_message() -> None:
    assert split_message(MSG) == (b"From: a@example.org\r\nSubject: hi\r\n\r\n", b"the body\r\n")
    assert split_message(b"A: b\n\nx\r\n\r\ny") == (b"A: b\n\n", b"x\r\n\r\ny")
    assert split_message(b"A: b\r\n") == (b"A: b\r\n", b"")
    assert split_message(b"\r\nbody") == (b"\r\n", b"body")


def test_capture_joins_the_batch_of_the_mailbox_copies(
    tmp_path: Path, store: MaildirStore, vault: Vault
) -> None:
    users = [store.user(f"u{i}@example.org") for i in range(3)]
    envelope = VaultEnvelope("smtp", "a@example.org", ("u0@example.org",), id="T1")

    def deliver() -> defer.Deferred:
        captured = vault.capture(MSG, envelope)
        copies = [u.deliver(MSG) for u in users]
        return defer.gatherResults([captured, *copies])

    seq, *uids = on_reactor(deliver)
    assert uids == [1, 1, 1]
    assert seq == 2  # blob 1, capture 2: one copy for three mailboxes
    assert vault.catalog.message(seq) == MSG
    fields = vault.catalog.record(seq).fields
    assert fields["envelope"]["id"] == "T1" and fields["size"] == len(MSG)
    # The same body again, with other headers: one more capture, no second blob.
    again = b"From: b@example.org\r\n\r\nthe body\r\n"
    seq2 = on_reactor(vault.capture, again, envelope)
    assert seq2 == 3 and vault.catalog.message(seq2) == again
    totals = vault.catalog.totals()
    assert totals.kinds == {"blob": 1, "capture": 2} and totals.shared == 1
    assert totals.original == len(MSG) + len(again)


def test_catalog_is_rebuilt_and_catches_up(tmp_path: Path, vault: Vault) -> None:
    seq = on_reactor(vault.capture, MSG, VaultEnvelope("lmtp", ""))
    log = SegmentLog(tmp_path / "vault")
    with log.locked():
        log.append([("notice", {"text": "from a command"}, None)], 1.0)
    # The server's next capture catalogues the command's record first.
    assert on_reactor(vault.capture, MSG, VaultEnvelope("lmtp", "")) == 4
    assert vault.catalog.count() == 4
    assert vault.catalog.record(3).fields["kind"] == "notice"  # read where catalogued
    vault.catalog.close()
    (tmp_path / "vault" / FILE).write_bytes(b"not a database at all" * 100)
    catalog = Catalog(tmp_path / "vault", log)
    assert catalog.count() == 4 and catalog.message(seq) == catalog.message(4) == MSG
    with pytest.raises(NotAMessage):
        catalog.message(3)
    with pytest.raises(NotAMessage):
        catalog.message(99)


def test_message_with_removed_content_is_expired(tmp_path: Path, vault: Vault) -> None:
    seq = on_reactor(vault.capture, MSG, VaultEnvelope("lmtp", ""))
    catalog = vault.catalog
    blob = catalog.record(1)
    path = vault.log.path_of(1)
    data = bytearray(path.read_bytes())
    # Remove the blob's content as expiry would: the frame says 0 octets of content.
    start = blob.offset
    frame = blob.frame()
    new = b"R %s %d 0\n" % (blob.hash.encode(), len(blob.meta)) + blob.meta + b"\n"
    data[start : start + len(frame)] = new
    path.write_bytes(bytes(data))
    (tmp_path / "vault" / FILE).unlink()
    with pytest.raises(Expired):
        Catalog(tmp_path / "vault", vault.log).message(seq)


@implementer(ICommitParticipant)
class Failing:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, items: Sequence[object]) -> Sequence[object]:
        raise OSError("the vault's disk is gone")

    def directory(self) -> os.PathLike[str]:
        return self.path

    def flush(self) -> None:
        pass


def test_a_failing_participant_fails_the_whole_batch(tmp_path: Path, store: MaildirStore) -> None:
    user = store.user("u@example.org")

    def deliver() -> defer.Deferred:
        joined = store.committer.join(Failing(tmp_path), "item")
        copy = user.deliver(MSG)
        return defer.DeferredList([joined, copy], consumeErrors=True)

    outcomes = on_reactor(deliver)
    assert [ok for ok, _ in outcomes] == [False, False]
    assert inbox_files(user) == []  # nothing placed, the tmp file removed
    assert on_reactor(user.deliver, MSG) == 1  # the next batch goes on


def test_vault_settings(tmp_path: Path) -> None:
    assert load_settings(data=str(tmp_path)).vault == VaultSettings()
    (tmp_path / "ourmail.toml").write_text('[vault]\nenabled = false\nroots = ["vol2"]\n')
    vault = load_settings(data=str(tmp_path)).vault
    assert not vault.enabled and vault.roots == (tmp_path.absolute() / "vol2",)
    (tmp_path / "ourmail.toml").write_text("[vault]\nsegment_size = 10\n")
    with pytest.raises(ConfigError, match="segment_size"):
        load_settings(data=str(tmp_path))


@pytest.mark.skipif(not HAVE_SYNCFS, reason="without syncfs the vault always flushes first")
def test_flush_first_flushes_the_records_before_the_mailbox_files(
    tmp_path: Path, store: MaildirStore
) -> None:
    (tmp_path / "ourmail.toml").write_text("[vault]\nflush_first = true\n")
    assert load_settings(data=str(tmp_path)).vault.flush_first
    flushed: list[bool] = []
    for first in (False, True):
        vault = open_vault(tmp_path / f"vault-{first}", (), store.committer, flush_first=first)
        vault.log.flush_data = lambda first=first: flushed.append(first)  # type: ignore[method-assign]
        vault.flush()
    assert flushed == [True]
