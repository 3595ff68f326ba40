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
from twisted.internet.defer import Deferred, succeed
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
    assert issubclass(attempt(cached, "a wrong password"), error.UnauthorizedLogin)
    assert attempt(FirstOf(checker)) is AccountDisabled  # said through a chain too
    with pytest.raises(AccountRefused, match="one line"):
        ops.disable_user(settings, db, USER, "two\nlines")

    assert ops.enable_user(settings, db, USER) == USER
    assert attempt(cached) == USER
    with pytest.raises(AccountRefused) as refused:
        ops.enable_user(settings, db, USER)
    assert refused.value.code == "not-disabled"


def test_a_later_checker_does_not_let_a_disabled_account_in(tmp_path: Path) -> None:
    """LDAP after the local accounts (as service.py chains them): the same address with its
    directory password would reach the same mailbox; it is still asked (same time taken)."""
    db = AccountDB(tmp_path)
    db.add_user(USER, hash_password(PASSWORD))
    db.set_disabled(USER, {"since": "now", "reason": ""})
    asked: list[bytes] = []

    class Directory:
        credentialInterfaces = (credentials.IUsernamePassword,)

        def requestAvatarId(self, creds: Any) -> Deferred[Any]:
            asked.append(creds.password)
            return succeed(USER)

    chain = FirstOf(AccountChecker(db, "example.test"), Directory())
    assert attempt(chain) is AccountDisabled
    assert attempt(chain, "the directory's password") is AccountDisabled
    assert asked == [PASSWORD.encode(), b"the directory's password"]
    db.set_disabled(USER, None)
    assert attempt(chain, "the directory's password") == USER


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
    change.callback("h2")  # the stamp the change produced
    on_reactor(lambda: kept)
    assert own.keeping == 0 and own.stamp == "h2" and on_reactor(revoker.compare) == 0
    assert events == ["bye alice", "logout alice"]


@pytest.mark.parametrize("outcome", ["disabled meanwhile", "the change failed"])
def test_a_change_by_someone_else_during_the_own_one_ends_the_session(outcome: str) -> None:
    """An admin's disable landing while the user's own change is in flight is not adopted as
    the session's stamp; nor is any change after an own change that failed."""
    checker = Stamps()
    checker.stamps = {"alice": ("h1", False)}
    revoker = SessionRevoker(checker, lambda: None, Clock())
    events: list[str] = []
    own = logged_in(revoker, "alice", events)
    change: Deferred[Hashable] = Deferred()
    kept = own.keep_through(change)
    checker.stamps["alice"] = ("h2", False)  # the new password is stored
    checker.stamps["alice"] = ("h2", True)  # and the admin disables the account
    assert on_reactor(revoker.compare) == 0  # the session is kept through its own change
    if outcome == "disabled meanwhile":
        change.callback(("h2", False))
        on_reactor(lambda: kept)
    else:
        change.errback(ValueError("no such user"))
        with pytest.raises(ValueError):
            on_reactor(lambda: kept)
    assert events == ["bye alice", "logout alice"] and len(revoker) == 0


def test_a_chains_stamp_follows_the_own_change_in_its_part() -> None:
    """Through an LDAP+local chain the stamp is a tuple: the local part takes the change's."""
    checker = Stamps()
    checker.stamps = {"alice": (("h1", False), None)}
    revoker = SessionRevoker(checker, lambda: None, Clock())
    events: list[str] = []
    own = logged_in(revoker, "alice", events)
    change: Deferred[Hashable] = Deferred()
    kept = own.keep_through(change)
    checker.stamps["alice"] = (("h2", False), None)
    change.callback(("h2", False))
    on_reactor(lambda: kept)
    assert own.stamp == (("h2", False), None) and events == []


def test_a_failing_session_does_not_stop_the_round() -> None:
    checker = Stamps()
    checker.stamps = {"alice": "a1", "bob": "b1"}
    revoker = SessionRevoker(checker, lambda: None, Clock())
    events: list[str] = []
    broken = logged_in(revoker, "alice", events)

    def boom() -> None:
        raise AttributeError("'NoneType' object has no attribute 'loseConnection'")

    broken.when_revoked(boom)
    logged_in(revoker, "bob", events)
    checker.stamps = {"alice": "a2", "bob": "b2"}
    assert on_reactor(revoker.compare) == 1  # bob's; alice's failed (and was logged)
    assert events == ["logout alice", "bye bob", "logout bob"] and len(revoker) == 0


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


def test_an_unreadable_accounts_file_is_logged_once_per_error(tmp_path: Path) -> None:
    """The probe runs once a second: the same error is logged once, not a traceback a second."""
    from twisted.logger import globalLogPublisher

    db = AccountDB(tmp_path)
    db.add_user(USER, hash_password(PASSWORD))
    revoker = SessionRevoker(AccountChecker(db), db.stamp, Clock())
    failures: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event and event.get("log_namespace", "").endswith("revocation"):
            failures.append(str(event["log_failure"].value))

    globalLogPublisher.addObserver(observe)
    try:
        (tmp_path / "accounts.json").write_text("{broken")
        for _ in range(3):
            on_reactor(revoker.tick)
        (tmp_path / "accounts.json").write_text("[]")
        on_reactor(revoker.tick)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(failures) == 2 and "unreadable" in failures[0] and "not an ourmail" in failures[1]
