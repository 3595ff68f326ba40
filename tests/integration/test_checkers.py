"""Checkers given to the server (as ``--auth`` gives them): several are asked in turn over
IMAP, and one that fails with an error of its own makes the login fail temporarily
(``NO [UNAVAILABLE]``, RFC 5530) instead of a wrong password or an internal error."""

from __future__ import annotations

import imaplib
from pathlib import Path
from typing import Any

import pytest
from conftest import client_tls, running_server
from twisted.cred import credentials
from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from ourmail.auth.accounts import AccountDB
from ourmail.auth.checker import AccountChecker


@implementer(ICredentialsChecker)
class Broken:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def requestAvatarId(self, c: Any) -> Deferred[Any]:
        return fail(RuntimeError("the back end said something odd"))


def imap_login(port: int, user: str, password: str) -> str:
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_tls())
    try:
        return m.login(user, password)[0]
    except imaplib.IMAP4.error as e:
        return str(e)
    finally:
        m.shutdown()


def test_several_checkers_are_asked_in_turn(tmp_path: Path) -> None:
    extra = InMemoryUsernamePasswordDatabaseDontUse()
    extra.addUser(b"bob@example.test", b"bob's password")
    local = AccountChecker(AccountDB(tmp_path / "data"))  # as --auth=ourmail:DATA makes it
    with running_server(tmp_path, checkers=[extra, local]) as srv:
        port = srv.port("imaps")
        assert imap_login(port, "bob@example.test", "bob's password") == "OK"
        assert imap_login(port, "alice", srv.password) == "OK"  # the primary domain
        assert "AUTHENTICATIONFAILED" in imap_login(port, "alice", "wrong")


@pytest.mark.parametrize("order", ["broken first", "broken alone"])
def test_a_failing_checker_is_a_temporary_failure(tmp_path: Path, order: str) -> None:
    checkers = (
        [Broken()]
        if order == "broken alone"
        else [Broken(), AccountChecker(AccountDB(tmp_path / "data"))]
    )
    with running_server(tmp_path, checkers=checkers) as srv:
        assert "UNAVAILABLE" in imap_login(srv.port("imaps"), "carol@example.test", "whatever")
        if order == "broken first":
            assert imap_login(srv.port("imaps"), srv.user, srv.password) == "OK"
