"""The realm's logout (twisted.cred's third return value of ``requestAvatar``) is called once
for every login, when the session ends: on IMAP, POP3 and submission, after a goodbye, after a
dropped connection, when the connection drops while the password is being checked, and at once
when POP3 turns a logged-in user away (maildrop in use)."""

from __future__ import annotations

import base64
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, RunningServer, running_server
from rawclient import RawClient
from twisted.cred.portal import IRealm
from zope.interface import implementer

from ourmail.interfaces import IUserStore
from ourmail.store.memory import MemoryStore
from ourmail.store.userstore import ensure_default_folders


@implementer(IRealm)
class RecordingRealm:
    """Hands out in-memory stores and records each login and each logout call."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.lock = threading.Lock()
        self.logins: list[str] = []
        self.logouts: list[str] = []

    def requestAvatar(
        self, avatar_id: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        assert IUserStore in interfaces
        name = avatar_id.decode() if isinstance(avatar_id, bytes) else avatar_id
        user = self.store.user(name)
        ensure_default_folders(user)
        with self.lock:
            self.logins.append(name)

        def logout() -> None:
            with self.lock:
                self.logouts.append(name)

        return IUserStore, user, logout

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.logins), len(self.logouts)


@pytest.fixture
def realm() -> RecordingRealm:
    return RecordingRealm()


@pytest.fixture
def srv(tmp_path: Path, realm: RecordingRealm) -> Iterator[RunningServer]:
    with running_server(tmp_path, realm=realm) as server:
        yield server


def settled(realm: RecordingRealm, logins: int, logouts: int) -> bool:
    """Whether the realm reaches ``logins`` logins and ``logouts`` logouts (and stays there)."""
    deadline = time.monotonic() + 30
    while realm.counts() != (logins, logouts) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    return realm.counts() == (logins, logouts)


def drop(c: RawClient) -> None:
    """Close the connection without a goodbye (a reset, as a client that lost its network)."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.sock.close()


def talk(c: RawClient, command: str, last: bytes) -> RawClient:
    """Send ``command`` and read the reply up to the line starting with ``last``."""
    c.send(command.encode() + b"\r\n")
    c.until(last)
    return c


def connect(srv: RunningServer, service: str, *exchange: tuple[str, bytes]) -> RawClient:
    """A TLS session on ``service``, past its greeting and then ``exchange`` (see talk)."""
    c = RawClient(srv.port(service), tls=True, timeout=30)
    c.line()
    for command, last in exchange:
        talk(c, command, last)
    return c


def goodbye(c: RawClient, command: str, last: bytes) -> None:
    """Say goodbye (LOGOUT, QUIT), read the reply and close, as a client does."""
    talk(c, command, last).sock.close()


_users = itertools.count()


def fresh_user(srv: RunningServer) -> str:
    """A new account, so its first login is a real (slow) password check."""
    address = f"user{next(_users)}@{srv.domain}"
    srv.add_user(address)
    return address


def imap(srv: RunningServer, user: str) -> RawClient:
    return connect(srv, "imaps", (f'a LOGIN {user} "{PASSWORD}"', b"a OK"))


def test_imap_logout_and_dropped_connection(srv: RunningServer, realm: RecordingRealm) -> None:
    c = imap(srv, srv.user)
    assert realm.counts() == (1, 0)
    goodbye(c, "b LOGOUT", b"b OK")
    assert settled(realm, 1, 1)
    drop(imap(srv, srv.user))
    assert settled(realm, 2, 2)


def test_imap_connection_dropped_while_the_password_is_checked(
    srv: RunningServer, realm: RecordingRealm
) -> None:
    c = connect(srv, "imaps")
    c.send(f'a LOGIN {fresh_user(srv)} "{PASSWORD}"\r\n'.encode())
    drop(c)
    assert settled(realm, 1, 1)


def pop3(srv: RunningServer, expect: bytes = b"+OK Maildrop") -> RawClient:
    return connect(srv, "pop3s", (f"USER {srv.user}", b"+OK"), (f"PASS {PASSWORD}", expect))


def test_pop3_logout_dropped_connection_and_maildrop_in_use(
    srv: RunningServer, realm: RecordingRealm
) -> None:
    goodbye(pop3(srv), "QUIT", b"+OK")
    assert settled(realm, 1, 1)
    first = pop3(srv)
    second = pop3(srv, expect=b"-ERR [IN-USE]")
    assert settled(realm, 3, 2)  # the second is logged out at once, the first stays in
    drop(first)
    goodbye(second, "QUIT", b"+OK")
    assert settled(realm, 3, 3)


def submission(srv: RunningServer) -> RawClient:
    plain = base64.b64encode(f"\0{srv.user}\0{PASSWORD}".encode()).decode()
    return connect(
        srv, "submissions", ("EHLO client.test", b"250 "), (f"AUTH PLAIN {plain}", b"235")
    )


def test_submission_logout_and_dropped_connection(
    srv: RunningServer, realm: RecordingRealm
) -> None:
    goodbye(submission(srv), "QUIT", b"221")
    assert settled(realm, 1, 1)
    drop(submission(srv))
    assert settled(realm, 2, 2)


def test_no_login_no_logout(srv: RunningServer, realm: RecordingRealm) -> None:
    drop(connect(srv, "imaps", (f'a LOGIN {srv.user} "wrong password"', b"a NO")))
    assert settled(realm, 0, 0)
