"""A complete ourmail plugin example: a realm and a checker of your own.

Every user who logs in gets a mailbox kept in memory, with a welcome message in the INBOX.
Logins are checked against a dictionary.  Run it, then point any IMAP client at it:

    .venv/bin/python docs/examples/welcome_realm.py
    # IMAP with STARTTLS on 127.0.0.1:1143, user "alice", password "wonderland"

Copy it and replace the two parts: ``WelcomeRealm`` (who gets which mailbox) and the checker
(who may log in; any twisted.cred ICredentialsChecker for IUsernamePassword works).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm
from twisted.internet import reactor
from zope.interface import implementer

from ourmail.config import SERVICES, load_settings
from ourmail.interfaces import IUserStore
from ourmail.service import Server, build
from ourmail.store.memory import MemoryStore
from ourmail.store.userstore import ensure_default_folders

WELCOME = b"""From: The Postmaster <postmaster@example.org>\r
To: {user}\r
Subject: Welcome, {user}!\r
\r
This mailbox lives in memory: whatever you put here is gone when the server stops.\r
"""


@implementer(IRealm)
class WelcomeRealm:
    """Hands every login an in-memory mailbox with the standard folders and a welcome."""

    def __init__(self) -> None:
        self.store = MemoryStore()

    def requestAvatar(
        self, avatar_id: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, IUserStore, Callable[[], None]]:
        if IUserStore not in interfaces:
            raise NotImplementedError("this realm serves IMAP and POP3 (IUserStore) only")
        name = avatar_id.decode() if isinstance(avatar_id, bytes) else avatar_id
        user = self.store.user(name)
        ensure_default_folders(user)
        if not user.folder("INBOX").uids():
            user.deliver(WELCOME.replace(b"{user}", name.encode()))
        return IUserStore, user, lambda: None


def make_server(data_dir: Path, imap_port: int = 1143) -> Server:
    """An ourmail serving only IMAP on loopback, with this realm and checker."""
    settings = load_settings(
        data=str(data_dir),
        domains=("example.org",),
        hostname="localhost",
        listen=(
            f"imap=tcp:{imap_port}:interface=127.0.0.1",
            *(f"{service}=none" for service in SERVICES if service != "imap"),
        ),
    )
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser(b"alice", b"wonderland")
    return build(settings, reactor, checkers=[checker], realm=WelcomeRealm())


if __name__ == "__main__":
    server = make_server(Path(tempfile.mkdtemp(prefix="welcome-")))
    server.service.startService()
    print("IMAP (STARTTLS) on 127.0.0.1:1143 - user alice, password wonderland; Ctrl-C stops")
    reactor.run()
