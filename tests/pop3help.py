"""Driving POP3 from tests: delivery by SMTP, poplib sessions, and a raw line session."""

from __future__ import annotations

import poplib
import smtplib

from conftest import RunningServer, client_tls
from rawclient import RawClient

MSG = b"From: bob@else.test\r\nSubject: pop %d\r\n\r\nline 1\r\n.starts with a dot\r\nline 3\r\n"


def deliver(srv: RunningServer, n: int = 1, rcpt: str | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        for i in range(n):
            s.sendmail("bob@else.test", [rcpt or srv.user], MSG % i)


def pop(srv: RunningServer, user: str | None = None) -> poplib.POP3_SSL:
    p = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=client_tls())
    p.user(user or srv.user)
    p.pass_(srv.password)
    return p


def raw(srv: RunningServer, login: bool = True) -> RawClient:
    """A POP3S line session, logged in unless ``login`` is False."""
    c = RawClient(srv.port("pop3s"), tls=True)
    assert c.line().startswith(b"+OK")
    if login:
        c.send(f"USER {srv.user}\r\nPASS {srv.password}\r\n".encode())
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"+OK Maildrop")
    return c


def multiline(c: RawClient) -> list[bytes]:
    """The lines of a multi-line response up to its final ``.``."""
    lines = [c.line()]
    while lines[-1] != b".":
        lines.append(c.line())
    return lines[:-1]
