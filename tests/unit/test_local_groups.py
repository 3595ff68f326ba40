"""Local groups and users' forwarding in the local directory (``ourmail/directory/local.py``,
``expand.py``) and the shared commands' rules (``ourmail/manage/groupops.py``): each member
once, nested groups expanded, loops stopped, expansion bounded, forwards that loop refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ourmail.auth.accounts import AccountDB
from ourmail.config import load_settings
from ourmail.directory import expand as expand_module
from ourmail.directory.local import LocalDirectory
from ourmail.interfaces import AccountRefused, Recipient
from ourmail.manage import accountops, groupops


@pytest.fixture
def db(tmp_path: Path) -> AccountDB:
    db = AccountDB(tmp_path)
    for user in ("ann", "ben", "cat"):
        db.add_user(f"{user}@example.test", "x")
    return db


def settings(db: AccountDB):  # type: ignore[no-untyped-def]
    return load_settings(data=str(db.path.parent), domains=("example.test",), hostname="mx")


def lookup(db: AccountDB, address: str) -> Recipient:
    found: list[Recipient] = []
    LocalDirectory(db, ("example.test",)).lookup(address).addCallback(found.append)
    return found[0]


def test_nested_groups_reach_each_member_once_and_loops_stop(db: AccountDB) -> None:
    s = settings(db)
    groupops.add_group(s, db, "inner@example.test", "Inner", ["ben", "cat", "x@far.test"])
    groupops.add_group(s, db, "outer@example.test", "Outer", ["ann", "inner@example.test", "ben"])
    groupops.add_members(s, db, "inner@example.test", ["outer@example.test"])  # a loop
    found = lookup(db, "outer@example.test")
    assert found.kind == "alias"
    assert found.targets == ("ann@example.test", "ben@example.test", "cat@example.test")
    assert found.forwards == ("x@far.test",)
    assert lookup(db, "inner@example.test").targets == (
        "ben@example.test",
        "cat@example.test",
        "ann@example.test",
    )
    directory = LocalDirectory(db, ("example.test",))
    assert directory.may_send_as("ann@example.test", "outer@example.test")
    assert not directory.may_send_as("cat@example.test", "outer@example.test")  # nested only
    assert "outer@example.test" in directory.identities("ann@example.test")


def test_forwarding_keeps_a_copy_or_not(db: AccountDB) -> None:
    s = settings(db)
    groupops.set_forward(s, db, "ann", ["a@far.test", "ben"], keep=True)
    assert lookup(db, "ann@example.test") == Recipient(
        "alias", "ann@example.test", ("ann@example.test", "ben@example.test"), ("a@far.test",)
    )
    groupops.set_forward(s, db, "ann", ["a@far.test"], keep=False)
    assert lookup(db, "ann@example.test").mailboxes == ()
    groupops.set_forward(s, db, "ann", None)
    assert lookup(db, "ann@example.test") == Recipient("user", "ann@example.test")


def test_forwards_that_loop_are_refused(db: AccountDB) -> None:
    s = settings(db)
    with pytest.raises(AccountRefused) as e:
        groupops.set_forward(s, db, "ann", ["ann@example.test"])
    assert e.value.code == "self-forward"
    groupops.set_forward(s, db, "ben", ["cat"], keep=False)
    groupops.set_forward(s, db, "cat", ["ann"], keep=False)
    with pytest.raises(AccountRefused) as e:
        groupops.set_forward(s, db, "ann", ["ben"], keep=False)
    assert e.value.code == "forward-loop"
    groupops.add_group(s, db, "all@example.test", "", ["ann", "ben"])
    with pytest.raises(AccountRefused) as e:
        groupops.set_forward(s, db, "ann", ["all@example.test"])
    assert e.value.code == "forward-loop"
    with pytest.raises(AccountRefused) as e:
        groupops.set_forward(s, db, "ann", [f"f{i}@far.test" for i in range(11)])
    assert e.value.code == "too-many"
    assert db.forward("ann@example.test") is None


def test_group_rules(db: AccountDB) -> None:
    s = settings(db)
    for address, members, code in (
        ("ann@example.test", [], "exists"),
        ("g@nowhere.test", [], "not-served"),
        ("g@example.test", ["nobody@example.test"], "not-local-user"),
        ("g@example.test", ["g@example.test"], "bad-target"),
        ("g@example.test", ["not an address"], "bad-target"),
    ):
        with pytest.raises(AccountRefused) as e:
            groupops.add_group(s, db, address, "", members)
        assert e.value.code == code, address
    with pytest.raises(AccountRefused) as e:
        groupops.add_group(s, db, "g@example.test", "two\nlines", [])
    assert e.value.code == "bad-name"
    groupops.add_group(s, db, "g@example.test", "G", ["ann"])
    for change in (
        lambda: accountops.add_user(s, db, "g@example.test", "long enough password"),
        lambda: accountops.set_alias(s, db, "g@example.test", ["ann"]),
    ):
        with pytest.raises(AccountRefused) as e:
            change()
        assert e.value.code == "exists"
    with pytest.raises(AccountRefused) as e:
        groupops.remove_members(s, db, "g@example.test", ["ben"])
    assert e.value.code == "no-such-member"
    assert lookup(db, "empty@example.test").kind == "unknown"
    groupops.remove_members(s, db, "g@example.test", ["ann"])
    assert lookup(db, "g@example.test").kind == "unknown"  # a group of nobody takes no mail


def test_expansion_is_bounded(db: AccountDB, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expand_module, "MAX_EXPANSION", 2)
    groupops.add_group(settings(db), db, "g@example.test", "", ["ann", "ben", "cat"])
    assert len(lookup(db, "g@example.test").targets) == 2  # the group, then two addresses
