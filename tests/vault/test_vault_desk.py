"""The console's side of the vault (``VaultDesk``): a search while the index is far behind
is refused at once (the server's indexer catches up meanwhile), a capped count is said to be
a lower bound, one export at a time, and only dead processes' exports are swept at start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vaultrulehelp import Vault

from ourmail.config import AdminSettings
from ourmail.interfaces import Actor, VaultQuery, VaultRefused
from ourmail.vault import desk as desk_module
from ourmail.vault.catalog import Catalog
from ourmail.vault.desk import VaultDesk
from ourmail.vault.index import SQLiteIndex
from ourmail.vault.indexer import Indexer

ADMIN = Actor("records@org.test", "web", "127.0.0.1")
T0 = 1_800_000_000.0


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Vault, VaultDesk, Indexer]:
    vault = Vault(tmp_path / "vault")
    for n in range(3):
        vault.capture(T0 + n, "x@else.test", "bob@org.test", f"kumquat {n}", b"fruit\r\n")
    index = SQLiteIndex(tmp_path / "vault" / "index.sqlite")
    indexer = Indexer(vault.log, index)
    admin = AdminSettings(admins=(ADMIN.who,), vault_admins=(ADMIN.who,))
    catalog = Catalog(vault.log.root, vault.log)
    desk = VaultDesk(vault.log, catalog, index, indexer, admin, None, reactor=None)
    return vault, desk, indexer


def test_a_far_behind_index_is_refused_at_once(
    parts: tuple[Vault, VaultDesk, Indexer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, desk, indexer = parts
    monkeypatch.setattr(desk_module, "MAX_CATCH_UP", 1)
    with pytest.raises(VaultRefused) as refused:
        desk._search(ADMIN, VaultQuery(subject="kumquat"), 0, 50)
    assert refused.value.code == "indexing"  # the server's follower process catches up
    indexer.catch_up()
    total, exact, hits = desk._search(ADMIN, VaultQuery(subject="kumquat"), 0, 50)
    assert (total, exact, len(hits)) == (3, True, 3)


def test_a_capped_count_is_a_lower_bound(
    parts: tuple[Vault, VaultDesk, Indexer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, desk, _ = parts
    monkeypatch.setattr(desk.index, "count_limit", 2)
    total, exact, hits = desk._search(ADMIN, VaultQuery(subject="kumquat"), 0, 1)
    assert (total, exact, len(hits)) == (2, False, 1)


def test_one_export_at_a_time(parts: tuple[Vault, VaultDesk, Indexer]) -> None:
    _, desk, _ = parts
    with desk._exporting, pytest.raises(VaultRefused) as refused:
        desk._export(ADMIN, VaultQuery(subject="kumquat"), 10)
    assert refused.value.code == "busy"
    made = Path(desk._export(ADMIN, VaultQuery(subject="kumquat"), 10))
    assert made.name.startswith(f"export-{os.getpid()}-") and made.stat().st_size > 0


def test_only_dead_processes_exports_are_swept(
    parts: tuple[Vault, VaultDesk, Indexer],
) -> None:
    vault, desk, _ = parts
    desk.exports.mkdir(mode=0o700, exist_ok=True)
    dead = desk.exports / "export-999999999-aa.zip"
    live = desk.exports / f"export-{os.getpid()}-bb.zip"
    for path in (dead, live):
        path.write_bytes(b"zip")
    VaultDesk(vault.log, desk.catalog, desk.index, None, desk.admin, None, reactor=None)
    assert not dead.exists() and live.exists()
