"""twisted.cred edges (issue 13): several checkers (``--auth`` given more than once) are asked in
turn, the first that accepts wins, a refusal moves on and a checker that cannot answer makes the
login fail temporarily; the ``ourmail:`` checker of ``--auth`` takes bare local parts in the
primary domain like the default checker; a checker that cannot check passwords stops start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from storehelp import on_reactor
from twisted.cred import credentials, error
from twisted.cred.checkers import (
    AllowAnonymousAccess,
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.auth.checker import AccountChecker, FirstOf, password_checker
from ourmail.auth.passwords import hash_password
from ourmail.config import SERVICES, ConfigError
from ourmail.interfaces import DirectoryUnavailable
from twisted.plugins.ourmail_plugin import Options

PASSWORD = "Right-Horse-Battery-77"


def creds(name: str, password: str = PASSWORD) -> credentials.UsernamePassword:
    return credentials.UsernamePassword(name.encode(), password.encode())


def outcome(d: Deferred[Any]) -> Any:
    """The value of a fired Deferred, or the exception type it failed with."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out
    return out[0].type if hasattr(out[0], "type") else out[0]


def memory(**users: str) -> InMemoryUsernamePasswordDatabaseDontUse:
    return InMemoryUsernamePasswordDatabaseDontUse(
        **{name: password.encode() for name, password in users.items()}
    )


@implementer(ICredentialsChecker)
class Failing:
    """A checker whose back end is down (or broken): it fails with ``exc``."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.asked = 0

    def requestAvatarId(self, c: credentials.IUsernamePassword) -> Deferred[Any]:
        self.asked += 1
        return fail(self.exc)


def test_first_that_accepts_wins_and_a_refusal_moves_on() -> None:
    checker = FirstOf(memory(alice="a-pass"), memory(bob="b-pass", alice="other"))
    assert outcome(checker.requestAvatarId(creds("alice", "a-pass"))) == b"alice"
    assert outcome(checker.requestAvatarId(creds("alice", "other"))) == b"alice"
    assert outcome(checker.requestAvatarId(creds("bob", "b-pass"))) == b"bob"
    assert outcome(checker.requestAvatarId(creds("bob", "wrong"))) is error.UnauthorizedLogin


@pytest.mark.parametrize(
    "exc", [DirectoryUnavailable("LDAP down"), ConnectionRefusedError("refused"), KeyError("bug")]
)
def test_a_checker_that_cannot_answer_makes_the_login_temporary(exc: Exception) -> None:
    down = Failing(exc)
    checker = FirstOf(down, memory(bob="b-pass"))
    assert outcome(checker.requestAvatarId(creds("carol", "c-pass"))) is DirectoryUnavailable
    # ... but not when another checker accepts: the first that says yes wins.
    assert outcome(checker.requestAvatarId(creds("bob", "b-pass"))) == b"bob"
    assert down.asked == 2


def test_every_auth_option_is_asked_in_turn_and_ourmail_knows_the_primary_domain(
    tmp_path: Path,
) -> None:
    AccountDB(tmp_path).add_user("alice@example.test", hash_password(PASSWORD))
    (tmp_path / "passwd").write_text("bob:b-pass\n")
    options = Options()
    options.parseOptions([f"--auth=file:{tmp_path / 'passwd'}", f"--auth=ourmail:{tmp_path}"])
    checker = password_checker(options["credCheckers"], "example.test")
    assert isinstance(checker, FirstOf) and len(checker.checkers) == 2
    assert on_reactor(checker.requestAvatarId, creds("bob", "b-pass")) == b"bob"
    assert on_reactor(checker.requestAvatarId, creds("alice")) == "alice@example.test"
    assert on_reactor(checker.requestAvatarId, creds("Alice@Example.Test")) == "alice@example.test"
    with pytest.raises(error.UnauthorizedLogin):
        on_reactor(checker.requestAvatarId, creds("alice", "wrong"))


def test_an_explicit_default_domain_is_kept(tmp_path: Path) -> None:
    mine = AccountChecker(AccountDB(tmp_path), "other.test")
    checker = password_checker([mine], "example.test")
    assert checker is mine and mine.default_domain == "other.test"


def test_a_checker_that_cannot_check_passwords_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="cannot check user names and passwords"):
        password_checker([memory(bob="b"), AllowAnonymousAccess()], "example.test")


def test_twistd_refuses_to_start_with_it(tmp_path: Path) -> None:
    from twisted.plugins.ourmail_plugin import serviceMaker

    options = Options()
    no_listeners = [f"--listen={service}=none" for service in SERVICES]
    options.parseOptions(["--data", str(tmp_path / "data"), *no_listeners, "--auth=anonymous"])
    with pytest.raises(SystemExit, match="cannot check user names and passwords"):
        serviceMaker.makeService(options)
