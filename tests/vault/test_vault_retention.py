"""Retention rules, legal holds, expiry and the audit trail, with a controllable clock
(captures written as the capture part writes them: tests/vaultrulehelp.py)."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from vaultrulehelp import LOCAL, Vault

from ourmail.config import ConfigError, load_settings
from ourmail.interfaces import Actor, VaultQuery
from ourmail.vault import expiry, retention, retentionservice
from ourmail.vault.audit import audit
from ourmail.vault.catalog import Catalog, Expired
from ourmail.vault.index import SQLiteIndex
from ourmail.vault.indexer import Indexer
from ourmail.vault.retentionservice import RetentionService, VaultRetention
from ourmail.vault.role import may_use_vault
from ourmail.vault.segments import SegmentLog

DAY = 86400.0
T0 = 1_800_000_000.0


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(tmp_path / "vault")


def test_keep_30_days_expires_the_older_and_the_chain_still_verifies(vault: Vault) -> None:
    vault.rule(T0, "domain:org.test", 30)
    old = vault.capture(T0, "x@else.test", "bob@org.test", "old", b"secret old words\r\n")
    new = vault.capture(T0 + 20 * DAY, "x@else.test", "bob@org.test", "new", b"recent\r\n")
    report = vault.expire(T0 + 40 * DAY)
    assert report.plan.captures == (old,)
    assert report.plan.blobs == (old - 1,)
    contents = vault.contents()
    assert not contents[old] and not contents[old - 1] and contents[new]
    assert vault.check_chain() == {old, old - 1}
    on_disk = b"".join(p.read_bytes() for _, p in vault.log.segments())
    assert b"secret old words" not in on_disk and b"Subject: old" not in on_disk
    assert vault.expire(T0 + 41 * DAY).record == 0  # nothing more, and no empty record
    assert vault.expire(T0 + 60 * DAY).plan.captures == (new,)
    vault.check_chain()


def test_the_longest_rule_of_any_local_party_wins(vault: Vault) -> None:
    vault.rule(T0, "domain:org.test", 30)
    vault.rule(T0, "user:alice@org.test", 365)
    to_alice = vault.capture(T0, "x@else.test", "alice@org.test", "a", b"one\r\n")
    to_bob = vault.capture(T0, "x@else.test", "bob@org.test", "b", b"two\r\n")
    from_bob_to_alice = vault.capture(T0, "bob@org.test", "alice@org.test", "c", b"three\r\n")
    report = vault.expire(T0 + 100 * DAY)
    assert report.plan.captures == (to_bob,)
    assert vault.contents()[to_alice] and vault.contents()[from_bob_to_alice]
    assert [r.describe() for r in report.plan.rules] == ["domain:org.test=30 days"]


def test_forever_by_default(vault: Vault) -> None:
    seq = vault.capture(T0, "x@else.test", "bob@org.test", "a", b"one\r\n")
    assert vault.expire(T0 + 10_000 * DAY).record == 0
    vault.rule(T0, "default", 10)
    assert vault.expire(T0 + 11 * DAY).plan.captures == (seq,)


@pytest.mark.parametrize(
    "scope",
    [
        {"user": "Bob@Org.test"},
        {"domain": "else.test"},
        {"query": {"sender": "@else.test", "subject": "merger"}},
    ],
    ids=["user", "domain", "query"],
)
def test_a_hold_keeps_mail_until_released(vault: Vault, scope: dict[str, Any]) -> None:
    vault.rule(T0, "default", 30)
    held = vault.capture(T0, "x@else.test", "bob@org.test", "The Merger plan", b"held\r\n")
    other = vault.capture(T0, "y@third.test", "carol@org.test", "lunch", b"free\r\n")
    vault.hold(T0 + DAY, "case-12", scope)
    report = vault.expire(T0 + 40 * DAY)
    assert report.plan.captures == (other,)
    assert report.plan.held == {"case-12": 1}
    assert vault.contents()[held]
    with pytest.raises(retention.RetentionRefused, match="active already"):
        vault.hold(T0 + DAY, "case-12", {"user": "z@org.test"})
    vault.release(T0 + 41 * DAY, "case-12")
    assert vault.expire(T0 + 42 * DAY).plan.captures == (held,)
    vault.check_chain()


def test_a_hold_set_after_the_run_was_planned_is_honoured(vault: Vault) -> None:
    vault.rule(T0, "default", 30)
    seq = vault.capture(T0, "x@else.test", "bob@org.test", "a", b"one\r\n")
    planned = expiry.plan(vault.log, LOCAL, T0 + 40 * DAY)  # a dry run, or a scheduled one
    assert planned.captures == (seq,)
    vault.hold(T0 + 40 * DAY, "late", {"user": "bob@org.test"})
    report = vault.expire(T0 + 40 * DAY, planned)
    assert report.record == 0 and report.plan.held == {"late": 1}
    assert vault.contents()[seq]


class Racing(SegmentLog):
    """A log on which ``meanwhile`` runs just before expiry takes the lock: after its long
    pass, as another process would append."""

    meanwhile: list[Callable[[], None]] = []
    #: How often the lock was taken.
    taken = 0

    @contextmanager
    def locked(self) -> Iterator[None]:
        while self.meanwhile:
            self.meanwhile.pop()()
        with super().locked():
            self.taken += 1
            yield


@pytest.mark.parametrize("segment_size", [1 << 20, 700])
def test_records_appended_during_the_pass_are_honoured(vault: Vault, segment_size: int) -> None:
    vault.log.segment_size = segment_size  # 700: they go on in a new segment
    vault.rule(T0, "default", 30)
    first = vault.capture(T0, "x@else.test", "bob@org.test", "a", b"one\r\n")
    second = vault.capture(T0, "x@else.test", "carol@org.test", "b", b"two\r\n")
    racing = Racing(vault.log.root, segment_size=segment_size)
    # a new message with the same body as an expiring one: the body stays
    racing.meanwhile = [
        lambda: vault.capture(T0 + 40 * DAY, "y@else.test", "dan@org.test", "c", b"two\r\n")
    ]
    report = expiry.expire(racing, LOCAL, T0 + 40 * DAY)
    assert report.plan.captures == (first, second) and report.plan.blobs == (first - 1,)
    assert vault.contents()[second - 1]
    # a hold set while the pass ran
    third = vault.capture(T0, "x@else.test", "erin@org.test", "d", b"three\r\n")
    racing.meanwhile = [lambda: vault.hold(T0 + 40 * DAY, "late", {"user": "erin@org.test"})]
    racing.taken = 0
    report = expiry.expire(racing, LOCAL, T0 + 41 * DAY)
    assert report.record == 0 and report.plan.held == {"late": 1}
    assert racing.taken == 2  # planned again without the lock, then settled under it
    assert vault.contents()[third]
    vault.check_chain()


def test_an_interrupted_run_is_finished_unless_now_held(vault: Vault) -> None:
    """The expire record is written first: after a crash before the rewrite, the content it
    names is still whole (it verifies), and the next run removes it, or keeps it if held."""
    vault.rule(T0, "default", 30)
    first = vault.capture(T0, "x@else.test", "bob@org.test", "a", b"one\r\n")
    second = vault.capture(T0, "x@else.test", "carol@org.test", "b", b"two\r\n")
    vault.add(T0 + 40 * DAY, ("expire", {"records": [first - 1, first, second - 1, second],
                                         "rule": [], "reason": "retention"}, None))  # fmt: skip
    assert vault.check_chain() == set()
    vault.hold(T0 + 40 * DAY, "late", {"user": "carol@org.test"})
    report = vault.expire(T0 + 41 * DAY)
    assert report.record == 0 and report.plan.pending == (first - 1, first)
    contents = vault.contents()
    assert not contents[first] and contents[second] and contents[second - 1]
    vault.check_chain()


def test_a_shared_body_stays_while_a_kept_message_uses_it(vault: Vault) -> None:
    vault.rule(T0, "domain:org.test", 30)
    vault.rule(T0, "user:alice@org.test", None)
    gone = vault.capture(T0, "x@else.test", "bob@org.test", "a", b"same body\r\n")
    kept = vault.capture(T0, "x@else.test", "alice@org.test", "b", b"same body\r\n")
    report = vault.expire(T0 + 40 * DAY)
    assert report.plan.captures == (gone,) and report.plan.blobs == ()
    contents = vault.contents()
    assert not contents[gone] and contents[kept] and contents[gone - 1]
    vault.check_chain()


def test_audit_records_and_the_server_side_view_of_holds(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Trail:
        lines: list[tuple[str, str]] = []

        def record(self, actor: Actor, action: str, target: str, result: str,
                   detail: str = "") -> None:  # fmt: skip
            self.lines.append((action, result))

    seq = audit(vault.log, Actor("ann@org.test", "web", "192.0.2.1"), "search",
                '{"sender":"x@else.test"}', 3, "page 1", Trail(), now=T0)  # fmt: skip
    record = {s: r for _, r in vault.log.records() for s in [r.seq]}[seq]
    assert record.fields["action"] == "search" and record.fields["count"] == 3
    assert record.fields["by"] == "ann@org.test (web 192.0.2.1)"
    assert Trail.lines == [("vault.search", "ok")]

    service = RetentionService(vault.log, LOCAL, Clock())
    assert service.retention.state is None  # a vault exists: nothing erased before reading it
    assert not service.retention.may_erase("bob@org.test", "INBOX", None)  # type: ignore[arg-type]
    vault.hold(T0, "case", {"domain": "org.test"})
    retention_view: VaultRetention = service.retention
    retention_view.refresh(vault.log)
    assert not retention_view.may_erase("bob@org.test", "INBOX", None)  # type: ignore[arg-type]
    assert retention_view.may_erase("x@else.test", "INBOX", None)  # type: ignore[arg-type]
    vault.release(T0, "case")
    retention_view.refresh(vault.log)
    assert retention_view.may_erase("bob@org.test", "INBOX", None)  # type: ignore[arg-type]
    # a hold set since the last refresh counts at once (a minute's wait for the next one was
    # a minute in which a POP3 expunge erased held mail)
    vault.hold(T0, "at-once", {"user": "bob@org.test"})
    assert not retention_view.may_erase("bob@org.test", "INBOX", None)  # type: ignore[arg-type]
    assert retention_view.may_erase("x@else.test", "INBOX", None)  # type: ignore[arg-type]
    # further behind than the reactor reads at once: kept, and read again in a thread
    refreshed: list[SegmentLog] = []
    monkeypatch.setattr(retentionservice, "CATCH_UP", 1)
    monkeypatch.setattr(retentionservice, "deferToThread",
                        lambda f, log: maybeDeferred(lambda: refreshed.append(log) or f(log)))  # fmt: skip
    vault.release(T0, "at-once")
    vault.capture(T0, "x@else.test", "carol@org.test", "c", b"three\r\n")
    assert not retention_view.may_erase("x@else.test", "INBOX", None)  # type: ignore[arg-type]
    assert refreshed == [vault.log]
    assert retention_view.may_erase("bob@org.test", "INBOX", None)  # type: ignore[arg-type]
    # expiry rewrote the segment where the last reading ended: kept, and read in a thread
    monkeypatch.setattr(retentionservice, "CATCH_UP", 2000)
    vault.rule(T0, "default", 30)
    assert vault.expire(T0 + 40 * DAY).segments == (1,)
    assert not retention_view.may_erase("x@else.test", "INBOX", None)  # type: ignore[arg-type]
    assert refreshed == [vault.log, vault.log]
    assert retention_view.may_erase("x@else.test", "INBOX", None)  # type: ignore[arg-type]


def test_the_vault_role(tmp_path: Path) -> None:
    config = tmp_path / "ourmail.toml"
    config.write_text('domains = ["org.test"]\n[admin]\nadmins = ["a@org.test", "B@org.test"]\n'
                      'vault_admins = ["b@ORG.test"]\n')  # fmt: skip
    settings = load_settings(data=str(tmp_path), config=str(config))
    assert settings.admin.vault_admins == ("b@org.test",)
    assert may_use_vault(settings, "B@org.test") and may_use_vault(settings.admin, "b@org.test")
    assert not may_use_vault(settings, "a@org.test") and not may_use_vault(settings, "")
    config.write_text('domains = ["org.test"]\n[admin]\nvault_admins = ["c@org.test"]\n')
    with pytest.raises(ConfigError, match=r"not in 'admin\.admins'"):
        load_settings(data=str(tmp_path), config=str(config))


def test_an_open_catalog_follows_an_expiry_that_rewrote_its_segment(vault: Vault) -> None:
    """The server's catalog stays open while a command expires: positions moved by the
    rewrite are found again, and an expired body is stored anew rather than pointed at."""
    vault.rule(T0, "domain:org.test", 30)
    old = vault.capture(T0, "x@else.test", "bob@org.test", "old", b"gone soon\r\n")
    kept = vault.capture(T0 + 35 * DAY, "x@else.test", "bob@org.test", "new", b"stays\r\n")
    catalog = Catalog(vault.log.root, vault.log)
    old_body = catalog.record(old).fields["body"]
    vault.expire(T0 + 40 * DAY)
    assert catalog.message(kept).endswith(b"stays\r\n")  # its offset moved in the rewrite
    with pytest.raises(Expired):
        catalog.message(old)
    vault.bodies.clear()
    catalog.catch_up()
    assert catalog.blob(old_body) is None  # capture writes this body again
    again = vault.capture(T0 + 41 * DAY, "x@else.test", "bob@org.test", "old", b"gone soon\r\n")
    catalog.catch_up()
    assert catalog.message(again).endswith(b"gone soon\r\n")
    vault.check_chain()


@pytest.mark.parametrize("segment_size", [1 << 20, 700])
def test_the_index_follows_an_expiry_that_rewrote_segments(
    vault: Vault, tmp_path: Path, segment_size: int
) -> None:
    """Offsets the indexer kept (its cursor, its blobs' positions) move when expiry rewrites
    a segment, the one it reads on or an older one: a message captured afterwards that
    reuses a body there is indexed with that body all the same."""
    vault.log.segment_size = segment_size
    vault.rule(T0, "domain:org.test", 30)
    vault.capture(T0, "x@else.test", "bob@org.test", "old", b"soon gone " * 40 + b"\r\n")
    vault.capture(T0 + 35 * DAY, "x@else.test", "bob@org.test", "kept", b"kumquat stays\r\n")
    index = SQLiteIndex(tmp_path / "index.sqlite")
    indexer = Indexer(vault.log, index, tmp_path / "index.sqlite")
    assert indexer.catch_up() == 2
    vault.expire(T0 + 40 * DAY)
    again = vault.capture(
        T0 + 41 * DAY, "y@else.test", "bob@org.test", "again", b"kumquat stays\r\n"
    )
    assert indexer.catch_up() == 1
    total, hits = index.search(VaultQuery(words="kumquat"), 0, 10)
    assert total == 2 and again in [h.seq for h in hits]
    assert index.search(VaultQuery(subject="old"), 0, 10)[0] == 0  # the expired one is gone


def test_a_hold_on_body_words_asks_the_search_index(vault: Vault, tmp_path: Path) -> None:
    """A query hold on words of the text (or an attachment name) keeps what the search index
    finds; without the index it keeps everything, never less."""
    vault.rule(T0, "default", 30)
    kumquat = vault.capture(T0, "x@else.test", "bob@org.test", "fruit", b"the kumquat deal\r\n")
    other = vault.capture(T0, "x@else.test", "bob@org.test", "other", b"nothing to see\r\n")
    vault.hold(T0 + DAY, "case-kumquat", {"query": {"words": "kumquat"}})
    without = expiry.plan(vault.log, LOCAL, T0 + 40 * DAY)
    assert without.captures == () and without.held == {"case-kumquat": 2}
    index = SQLiteIndex(tmp_path / "index.sqlite")
    Indexer(vault.log, index, tmp_path / "index.sqlite").catch_up()
    report = expiry.expire(vault.log, LOCAL, T0 + 40 * DAY, index=index)
    assert report.plan.captures == (other,) and report.plan.held == {"case-kumquat": 1}
    assert vault.contents()[kumquat]


def test_closed_segments_are_rewritten_while_capture_appends(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the last segment is rewritten under the vault's lock: while a closed one is,
    another thread captures (the vault's lock is free, the expiry lock is not), and the
    chain verifies after both."""
    vault.log.segment_size = 700
    vault.rule(T0, "domain:org.test", 30)
    old = [vault.capture(T0, "x@else.test", "bob@org.test", f"o{n}", b"old %d\r\n" % n)
           for n in range(4)]  # fmt: skip
    last = vault.capture(T0, "x@else.test", "bob@org.test", "last", b"old last\r\n")
    assert len(vault.log.segments()) > 3
    rewriting: list[Path] = []
    during: list[int] = []
    rewrite, write = expiry._rewrite, expiry._write

    def probe(path: Path) -> bool:
        """True if the lock file at ``path`` is free now."""
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def watched_rewrite(path: Path, offsets: dict[int, int]) -> None:
        rewriting.append(path)
        rewrite(path, offsets)

    def watched_write(fd: int, data: bytes | memoryview) -> None:
        path = rewriting[-1]
        if not during and expiry.closed(vault.log, int(path.name[:8])):
            assert not probe(vault.log.root / expiry.EXPIRE_LOCK)
            assert probe(vault.log.root / "lock"), "a closed segment rewritten under the lock"
            capturing = threading.Thread(target=lambda: during.append(
                vault.capture(T0 + 40 * DAY, "y@else.test", "bob@org.test", "new", b"new\r\n")))  # fmt: skip
            capturing.start()
            capturing.join()
        write(fd, data)

    monkeypatch.setattr(expiry, "_rewrite", watched_rewrite)
    monkeypatch.setattr(expiry, "_write", watched_write)
    report = vault.expire(T0 + 40 * DAY)
    assert report.plan.captures == (*old, last) and len(during) == 1
    assert len(report.segments) == len(set(rewriting)) > 1
    assert vault.check_chain() == {*old, last, *(s - 1 for s in (*old, last))}
    assert vault.contents()[during[0]]
    after = vault.capture(T0 + 41 * DAY, "z@else.test", "bob@org.test", "after", b"after\r\n")
    assert vault.contents()[after] and after == during[0] + 2  # its blob, then it
    vault.check_chain()
