"""Paging the directory's users by the last address shown (issue 17 point 4): a new reading
of the index between two page views neither repeats nor skips anyone."""

from __future__ import annotations

from twisted.internet.task import Clock

from ourmail.directory.ldap import LDAPSettings
from ourmail.directory.ldapusers import LDAPUserList, _index
from ourmail.interfaces import DirectoryPage, Usage


def page(users: LDAPUserList, after: str, limit: int) -> DirectoryPage:
    found: list[DirectoryPage] = []
    users.users(["example.test"], "", after, limit).addCallback(found.append)
    (one,) = found
    return one


def test_a_new_reading_between_two_pages_neither_repeats_nor_skips() -> None:
    settings = LDAPSettings.from_urls("ldap://127.0.0.1:1/dc=example,dc=test")
    users = LDAPUserList(settings, Clock(), lambda d: True, lambda a: Usage(0, 0), refresh=1e9)
    before = [f"u{n:02d}@example.test" for n in range(0, 40, 2)]
    users._index = _index(before, 0, 0, False)
    first = page(users, "", 5)
    assert first.addresses == tuple(before[:5]) and (first.offset, first.total) == (0, 20)
    # Read again meanwhile: one added before the page's edge, one of the first page gone.
    users._index = _index([*before[1:], "u03@example.test"], 0, 0, False)
    second = page(users, first.addresses[-1], 5)
    assert second.addresses == tuple(before[5:10])  # neither u08 again nor u10 skipped
    assert (second.offset, second.total) == (5, 20)
    assert page(users, before[-1], 5).addresses == ()
