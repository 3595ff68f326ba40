"""The cache of verified logins (issue 13): a right password is remembered for a short time,
keyed by a keyed hash; a password change (through the admin command, as another process would
make it), a deleted account or the end of the TTL makes it check again; a wrong password is
always checked; the password itself is never kept."""

from __future__ import annotations

import gc
import io
import sys
import types
from pathlib import Path
from typing import Any

import attrs
import pytest
from storehelp import on_reactor
from twisted.cred import credentials, error
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.interface import InterfaceClass

from ourmail.admin.cli import main as admin
from ourmail.auth.accounts import AccountDB
from ourmail.auth.cache import CachingChecker, IStampedChecker
from ourmail.auth.checker import AccountChecker
from ourmail.auth.passwords import hash_password
from ourmail.config import ConfigError, LoginCacheSettings, load_settings
from ourmail.interfaces import DirectoryUnavailable, UnknownUser

PASSWORD = "Right-Horse-Battery-77"
USER = "alice@example.test"


def creds(name: str = USER, password: str = PASSWORD) -> credentials.UsernamePassword:
    return credentials.UsernamePassword(name.encode(), password.encode())


def result(d: Deferred[Any]) -> Any:
    """The outcome of a Deferred that has fired: its value, or its Failure."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


@implementer(IStampedChecker)
class Counting:
    """Accepts PASSWORD for USER, counts its checks, and has a stamp the test can change."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self) -> None:
        self.checks = 0
        self.stamp = "v1"
        self.pending: list[Deferred[Any]] | None = None

    def credential_stamp(self, username: bytes | str) -> str:
        return self.stamp

    def requestAvatarId(self, c: credentials.IUsernamePassword) -> Deferred[Any]:
        self.checks += 1
        if self.pending is not None:
            d: Deferred[Any] = Deferred()
            self.pending.append(d)
            return d
        if c.username == USER.encode() and c.password == PASSWORD.encode():
            return succeed(USER)
        return fail(error.UnauthorizedLogin())


def cached(inner: Any, ttl: float = 60, size: int = 100) -> tuple[CachingChecker, Clock]:
    clock = Clock()
    return CachingChecker(inner, clock, LoginCacheSettings(ttl=ttl, size=size)), clock


def test_a_right_password_is_checked_once_within_the_ttl() -> None:
    inner = Counting()
    checker, clock = cached(inner)
    assert [result(checker.requestAvatarId(creds())) for _ in range(5)] == [USER] * 5
    assert inner.checks == 1
    clock.advance(59)
    assert result(checker.requestAvatarId(creds())) == USER
    assert inner.checks == 1


def test_after_the_ttl_the_password_is_checked_again() -> None:
    inner = Counting()
    checker, clock = cached(inner, ttl=60)
    result(checker.requestAvatarId(creds()))
    clock.advance(60)
    assert result(checker.requestAvatarId(creds())) == USER
    assert inner.checks == 2


def test_a_changed_stamp_misses() -> None:
    inner = Counting()
    checker, _ = cached(inner)
    result(checker.requestAvatarId(creds()))
    inner.stamp = "v2"
    result(checker.requestAvatarId(creds()))
    assert inner.checks == 2


def test_a_wrong_password_after_a_cached_right_one_is_refused_and_failures_are_not_kept() -> None:
    inner = Counting()
    checker, _ = cached(inner)
    assert result(checker.requestAvatarId(creds())) == USER
    for n in range(3):
        f = result(checker.requestAvatarId(creds(password=PASSWORD + "x")))
        assert isinstance(f, Failure) and f.check(error.UnauthorizedLogin)
        assert inner.checks == 2 + n
    assert len(checker) == 1


def test_another_name_with_the_same_password_is_not_a_hit() -> None:
    inner = Counting()
    checker, _ = cached(inner)
    result(checker.requestAvatarId(creds()))
    f = result(checker.requestAvatarId(creds(name="mallory@example.test")))
    assert isinstance(f, Failure) and f.check(error.UnauthorizedLogin)


def test_logins_arriving_during_a_check_wait_for_it() -> None:
    inner = Counting()
    inner.pending = []
    checker, _ = cached(inner)
    waiting = [checker.requestAvatarId(creds()) for _ in range(10)]
    other = checker.requestAvatarId(creds(password="another one"))
    assert inner.checks == 2 and len(inner.pending) == 2
    inner.pending[0].callback(USER)
    inner.pending[1].errback(error.UnauthorizedLogin())
    assert [result(d) for d in waiting] == [USER] * 10
    assert result(other).check(error.UnauthorizedLogin)


def test_a_temporary_failure_is_shared_by_the_waiting_logins_and_not_kept() -> None:
    inner = Counting()
    inner.pending = []
    checker, _ = cached(inner)
    waiting = [checker.requestAvatarId(creds()) for _ in range(3)]
    inner.pending[0].errback(DirectoryUnavailable("LDAP down"))
    assert all(result(d).check(DirectoryUnavailable) for d in waiting)
    inner.pending = None
    assert result(checker.requestAvatarId(creds())) == USER
    assert inner.checks == 2


def test_at_most_size_entries_least_recently_used_out() -> None:
    @implementer(IStampedChecker)
    class Anyone(Counting):
        def requestAvatarId(self, c: credentials.IUsernamePassword) -> Deferred[Any]:
            self.checks += 1
            return succeed(c.username)

    inner = Anyone()
    checker, _ = cached(inner, size=3)
    for name in ("a", "b", "c", "a", "d"):  # "a" used again, so "b" is the oldest
        result(checker.requestAvatarId(creds(name=name)))
    assert len(checker) == 3
    checks = inner.checks
    for name in ("a", "c", "d"):
        result(checker.requestAvatarId(creds(name=name)))
    assert inner.checks == checks
    result(checker.requestAvatarId(creds(name="b")))
    assert inner.checks == checks + 1


def _reachable(root: object) -> list[object]:
    """Every object reachable from ``root`` through attributes and containers (not through
    modules, classes or functions, which lead to this test's own globals)."""
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        if isinstance(obj, InterfaceClass):
            continue
        seen[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(seen.values())


def test_the_password_is_never_kept(tmp_path: Path) -> None:
    db = AccountDB(tmp_path)
    db.add_user(USER, hash_password(PASSWORD))
    checker, _ = cached(AccountChecker(db, "example.test"))
    assert on_reactor(checker.requestAvatarId, creds()) == USER
    assert len(checker) == 1
    texts = [o for o in _reachable(checker) if isinstance(o, str | bytes | bytearray)]
    assert USER in texts  # the walk reaches the entry
    assert [
        t for t in texts if (PASSWORD.encode() if isinstance(t, bytes) else PASSWORD) in t
    ] == []


def passwd(data: Path, address: str, password: str) -> None:
    """``ourmail user passwd``, as an admin runs it next to the server."""
    old = sys.stdin
    sys.stdin = io.StringIO(password + "\n")
    try:
        assert admin(["--data", str(data), "user", "passwd", address, "--password-stdin"]) == 0
    finally:
        sys.stdin = old


class CountingAccounts(AccountChecker):
    checks = 0

    def requestAvatarId(self, c: credentials.IUsernamePassword) -> Deferred[str]:
        self.checks += 1
        return super().requestAvatarId(c)


@pytest.fixture
def local(tmp_path: Path) -> tuple[CachingChecker, CountingAccounts, Path]:
    (tmp_path / "ourmail.toml").write_text('domains = ["example.test"]\n')
    AccountDB(tmp_path).add_user(USER, hash_password(PASSWORD))
    inner = CountingAccounts(AccountDB(tmp_path), "example.test")
    return cached(inner)[0], inner, tmp_path


def login(checker: CachingChecker, name: str = USER, password: str = PASSWORD) -> Any:
    """The avatar id, or the exception type of the failure."""
    try:
        return on_reactor(checker.requestAvatarId, creds(name, password))
    except Exception as e:
        return type(e)


def test_a_password_changed_by_the_admin_command_is_never_taken_from_the_cache(
    local: tuple[CachingChecker, CountingAccounts, Path],
) -> None:
    checker, inner, data = local
    assert login(checker) == USER
    assert login(checker, "alice") == USER  # a bare local part: its own entry
    assert login(checker) == USER
    assert inner.checks == 2
    passwd(data, USER, "A-New-Password-99")
    assert login(checker) is error.UnauthorizedLogin
    assert login(checker, "alice") is error.UnauthorizedLogin
    assert login(checker, password="A-New-Password-99") == USER
    assert inner.checks == 5


def test_a_deleted_account_is_never_taken_from_the_cache(
    local: tuple[CachingChecker, CountingAccounts, Path],
) -> None:
    checker, _, data = local
    assert login(checker) == USER
    AccountDB(data).delete_user(USER)  # another process's view of the same folder
    assert login(checker) is UnknownUser  # an UnauthorizedLogin that says why, for the log


def test_cache_settings(tmp_path: Path) -> None:
    assert load_settings(data=str(tmp_path), hostname="mx.a.org").auth_cache == (
        LoginCacheSettings(ttl=60, size=10_000)
    )
    (tmp_path / "ourmail.toml").write_text("[auth]\ncache_ttl = 0\ncache_size = 5\n")
    assert load_settings(data=str(tmp_path), hostname="mx.a.org").auth_cache == (
        LoginCacheSettings(ttl=0, size=5)
    )


@pytest.mark.parametrize(
    "text",
    ["cache_ttl = -1", "cache_ttl = 3601", "cache_ttl = 'x'", "cache_size = 0", "cache_size = 1.5"],
)
def test_bad_cache_settings(tmp_path: Path, text: str) -> None:
    (tmp_path / "ourmail.toml").write_text(f"[auth]\n{text}\n")
    with pytest.raises(ConfigError):
        load_settings(data=str(tmp_path), hostname="mx.a.org")


@pytest.mark.parametrize("ttl", [60, 0])
def test_the_server_caches_unless_turned_off(tmp_path: Path, ttl: float) -> None:
    from twisted.internet import reactor

    from ourmail.service import assemble, first_start

    settings = load_settings(data=str(tmp_path), domains=("example.test",), hostname="mx.a.org")
    settings = attrs.evolve(settings, auth_cache=LoginCacheSettings(ttl=ttl))
    first_start(settings)
    portal = assemble(settings, reactor).authenticator.portal
    checker = portal.checkers[credentials.IUsernamePassword]
    assert isinstance(checker, CachingChecker if ttl else AccountChecker)
