"""The admin console's user index (``ourmail/manage/userindex.py``): sorted pages per domain,
substring search, and a rebuild only when ``accounts.json`` changes."""

from __future__ import annotations

from pathlib import Path

from ourmail.auth.accounts import AccountDB
from ourmail.manage.userindex import UserIndex


def fill(tmp_path: Path, addresses: list[str]) -> AccountDB:
    db = AccountDB(tmp_path)
    with db._update() as data:  # many users at once, unhashed: only listing is tested
        for address in addresses:
            data["users"][address] = {"password": "x"}
    return db


def test_pages_domains_and_search(tmp_path: Path) -> None:
    fill(tmp_path, [f"u{n:03d}@b.test" for n in range(120)] + ["zed@a.test", "amy@a.test"])
    snapshot = UserIndex(tmp_path).current()
    assert snapshot.page(None, "", 0, 3) == (["amy@a.test", "u000@b.test", "u001@b.test"], 122)
    assert snapshot.page(["a.test"], "", 0, 50) == (["amy@a.test", "zed@a.test"], 2)
    assert snapshot.page(["b.test", "a.test"], "", 121, 50) == (["zed@a.test"], 122)
    assert snapshot.page(["b.test"], "u11", 5, 3) == (
        ["u115@b.test", "u116@b.test", "u117@b.test"],
        10,
    )
    assert snapshot.page(["nowhere.test"], "", 0, 50) == ([], 0)
    assert snapshot.has_user("zed@a.test") and not snapshot.has_user("zed@b.test")


def test_rebuilt_only_when_the_file_changes(tmp_path: Path) -> None:
    db = fill(tmp_path, ["amy@a.test"])
    index = UserIndex(tmp_path)
    first = index.current()
    assert index.current() is first  # unchanged file: the same snapshot, nothing parsed
    db.add_user("bob@a.test", "x")
    db.set_alias("all@a.test", ["amy@a.test", "bob@a.test"])
    second = index.current()
    assert second is not first and second.users == ("amy@a.test", "bob@a.test")
    assert second.aliases == {"all@a.test": ("amy@a.test", "bob@a.test")}


def test_no_accounts_file(tmp_path: Path) -> None:
    assert UserIndex(tmp_path).current().page(None, "", 0, 50) == ([], 0)
