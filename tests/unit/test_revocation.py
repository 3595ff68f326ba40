"""Disabled accounts at the checker and the login cache, and the session revoker: a session
whose account's credential stamp changed is revoked (the protocol's callback, then the realm's
logout), others are left alone, the user's own password change keeps its session, and the
accounts file is probed in a thread once a tick, comparing only when it changed."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest
from storehelp import on_reactor
from twisted.cred import credentials, error
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.auth.cache import CachingChecker, IStampedChecker
from ourmail.auth.checker import AccountChecker, FirstOf
from ourmail.auth.login import Session
from ourmail.auth.passwords import hash_password
from ourmail.auth.revocation import SessionRevoker
from ourmail.config import LoginCacheSettings, load_settings
from ourmail.interfaces import AccountDisabled, AccountRefused
from ourmail.manage import accountops as ops

PASSWORD = "Right-Horse-Battery-77"
USER = "alice@example.test"


def attempt(checker: Any, password: str = PASSWORD) -> Any:
    """The avatar id, or the exception type of the failure."""
    creds = credentials.UsernamePassword(USER.encode(), password.encode())
    try:
        return on_reactor(checker.requestAvatarId, creds)
    except Exception as e:
        return type(e)


def test_a_disabled_account_is_refused_at_the_checker_and_the_cache(tmp_path: Path) -> None:
    (tmp_path / "ourmail.toml").write_text('domains = ["example.test"]\n')
    settings = load_settings(data=str(tmp_path), hostname="mx.example.test")
    db = AccountDB(tmp_path)
    db.add_user(USER, hash_password(PASSWORD))
    checker = AccountChecker(AccountDB(tmp_path), "example.test")
    cached = CachingChecker(checker, Clock(), LoginCacheSettings(ttl=60, size=10))
    assert attempt(cached) == USER  # now remembered
    before = checker.credential_stamp(USER)

    ops.disable_user(settings, AccountDB(tmp_path), "alice", "left")  # as the command does
    assert checker.credential_stamp(USER) != before
    assert attempt(cached) is AccountDisabled  # the remembered login is not used
    assert attempt(cached, "a wrong password") is error.UnauthorizedLogin
    assert attempt(FirstOf(checker)) is AccountDisabled  # said through a chain too
    with pytest.raises(AccountRefused, match="one line"):
        ops.disable_user(settings, db, USER, "two\nlines")

    assert ops.enable_user(settings, db, USER) == USER
    assert attempt(cached) == USER
    with pytest.raises(AccountRefused) as refused:
        ops.enable_user(settings, db, USER)
    assert refused.value.code == "not-disabled"


@implementer(IStampedChecker)
class Stamps:
    """A checker whose stamps the test sets."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self) -> None:
        self.stamps: dict[str, Hashable] = {}

    def credential_stamp(self, username: bytes | str) -> Hashable:
        return self.stamps.get(str(username))

    def requestAvatarId(self, creds: Any) -> Deferred[Any]:
        raise NotImplementedError


def logged_in(revoker: SessionRevoker, name: str, events: list[str]) -> Session:
    session = Session(object(), lambda: events.append(f"logout {name}"))
    revoker.register(session, name, revoker.stamp(name), "imap")
    session.when_revoked(lambda: events.append(f"bye {name}"))
    return session


def test_only_sessions_of_a_changed_account_are_revoked() -> None:
    checker = Stamps()
    checker.stamps = {"alice": "h1", "bob": "h2"}
    revoker = SessionRevoker(checker, lambda: None, Clock())
    events: list[str] = []
    logged_in(revoker, "alice", events)
    logged_in(revoker, "bob", events)
    ended = logged_in(revoker, "bob", events)
    ended.end()  # a session that ended is no longer watched
    assert len(revoker) == 2 and events == ["logout bob"]

    assert on_reactor(revoker.compare) == 0
    checker.stamps["alice"] = ("h1", True)  # disabled
    assert on_reactor(revoker.compare) == 1
    assert events == ["logout bob", "bye alice", "logout alice"]
    assert len(revoker) == 1
    assert on_reactor(revoker.compare) == 0


def test_the_own_password_change_keeps_its_session() -> None:
    checker = Stamps()
    checker.stamps = {"alice": "h1"}
    revoker = SessionRevoker(checker, lambda: None, Clock())
    events: list[str] = []
    own = logged_in(revoker, "alice", events)
    logged_in(revoker, "alice", events)  # Alice's phone
    change: Deferred[None] = Deferred()
    kept = own.keep_through(change)
    checker.stamps["alice"] = "h2"  # the new password is stored
    assert on_reactor(revoker.compare) == 1  # the phone's session, not this one
    change.callback(None)
    assert kept.called and on_reactor(revoker.compare) == 0
    assert events == ["bye alice", "logout alice"]


def test_a_checker_without_stamps_is_not_watched() -> None:
    class Plain:
        credentialInterfaces = (credentials.IUsernamePassword,)

    revoker = SessionRevoker(Plain(), lambda: None, Clock())  # type: ignore[arg-type]
    revoker.register(Session(object(), None), "alice", None, "pop3")
    assert len(revoker) == 0


def test_a_tick_compares_only_when_the_probe_changed() -> None:
    checker = Stamps()
    checker.stamps = {"alice": "h1"}
    seen = ["file v1"]
    clock = Clock()
    revoker = SessionRevoker(checker, lambda: seen[0], clock, full_check=30)
    events: list[str] = []
    logged_in(revoker, "alice", events)
    on_reactor(revoker.tick)  # the first look compares
    checker.stamps["alice"] = "h2"  # say, a checker that keeps accounts elsewhere
    on_reactor(revoker.tick)
    assert events == []  # the file did not change: no comparison
    seen[0] = "file v2"
    on_reactor(revoker.tick)
    assert events == ["bye alice", "logout alice"]

    logged_in(revoker, "alice", events)
    checker.stamps["alice"] = "h3"
    clock.advance(31)  # without a change of the file, every full_check seconds
    on_reactor(revoker.tick)
    assert events[-2:] == ["bye alice", "logout alice"]
