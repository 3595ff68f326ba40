"""Who may read a list's archive (:class:`ListArchives`): members, the group's members (kept
when the directory cannot be asked), owners and moderators; everyone for a public one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from ourmail.interfaces import DirectoryUnavailable, Recipient
from ourmail.lists.archive import ListArchives
from ourmail.lists.listdb import ListDB
from ourmail.lists.model import Archive, ListSettings, Member
from ourmail.store.memory import MemoryStore


class Groups:
    """A directory that knows one group, or is down."""

    def __init__(self) -> None:
        self.members: tuple[str, ...] = ("Gina@example.test", "far@else.test")
        self.down = False

    def lookup(self, address: str) -> Deferred[Recipient]:
        if self.down:
            return fail(DirectoryUnavailable("ldap down"))
        if address != "staff@example.test":
            return succeed(Recipient("unknown", address))
        local = tuple(m for m in self.members if m.endswith("@example.test"))
        remote = tuple(m for m in self.members if m not in local)
        return succeed(Recipient("alias", address, local, remote))


def now(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the reading waits"
    return results[0]


def test_readers_and_groups(tmp_path: Path) -> None:
    db = ListDB(tmp_path / "lists.sqlite")
    db.create(
        ListSettings(
            "team@example.test",
            name="Team",
            owners=("owner@example.test",),
            moderators=("mod@example.test",),
            group="staff@example.test",
        ),
        0.0,
    )
    db.subscribe("team@example.test", [Member("sub@example.test")])
    db.create(ListSettings("open@example.test", archive=Archive.PUBLIC), 0.0)
    directory = Groups()
    archives = ListArchives(
        db,
        MemoryStore(),
        directory,
        run=lambda f, *a: succeed(f(*a)),  # type: ignore[arg-type]
    )
    assert archives.folders("sub@example.test") == []  # nothing before the first reading
    assert now(archives.reload()) is None
    names = {
        who: [f.name for f in archives.folders(who)]
        for who in ("sub@example.test", "gina@example.test", "OWNER@example.test")
    }
    assert names == {
        "sub@example.test": ["open@example.test", "team@example.test"],
        "gina@example.test": ["open@example.test", "team@example.test"],
        "OWNER@example.test": ["open@example.test", "team@example.test"],
    }
    team = archives.folder("mod@example.test", "Team@Example.test")
    assert team is not None and team.title == "Team" and team.folder.name == "INBOX"
    assert archives.folder("else@example.test", "team@example.test") is None
    assert archives.folder("else@example.test", "nosuch@example.test") is None
    assert archives.folder("else@example.test", "open@example.test") is not None
    # The directory down: the group's last members are kept; then they change.
    directory.down = True
    now(archives.reload())
    assert archives.folder("gina@example.test", "team@example.test") is not None
    directory.down, directory.members = False, ()
    now(archives.reload())
    assert archives.folder("gina@example.test", "team@example.test") is None
    # Unsubscribed and the list made public: the former member reads it as everyone does.
    db.unsubscribe("team@example.test", ["sub@example.test"])
    now(archives.reload())
    assert archives.folder("sub@example.test", "team@example.test") is None
    db.update(ListSettings("team@example.test", archive=Archive.PUBLIC))
    now(archives.reload())
    assert archives.folder("sub@example.test", "team@example.test") is not None
    db.close()
