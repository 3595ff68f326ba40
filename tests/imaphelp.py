"""Driving IMAP from tests: a tagged raw session over implicit TLS, and delivery by SMTP."""

from __future__ import annotations

import itertools
import smtplib

from conftest import RunningServer
from rawclient import RawClient

MSG = (
    b"From: Bob <bob@else.test>\r\nTo: alice@example.test\r\nSubject: %d\r\n"
    b"Message-ID: <m%d@else.test>\r\n\r\nbody %d\r\n"
)


def deliver(srv: RunningServer, count: int = 1) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        for n in range(count):
            s.sendmail("bob@else.test", [srv.user], MSG % (n, n, n))


def listed_names(lines: list[bytes]) -> list[bytes]:
    """The mailbox names of the LIST and LSUB responses among ``lines``."""
    prefixes = (b"* LIST", b"* LSUB")
    return [x.rsplit(b" ", 1)[1].strip(b'"') for x in lines if x.startswith(prefixes)]


class Session:
    """A logged-in IMAP connection; :meth:`cmd` sends a tagged command and returns every line
    up to and including its tagged reply."""

    def __init__(self, srv: RunningServer, login: bool = True) -> None:
        self.raw = RawClient(srv.port("imaps"), tls=True)
        self.greeting = self.raw.line()
        self._tags = (f"t{n}" for n in itertools.count())
        self.last_tag = ""
        if login:
            self.ok(f'LOGIN {srv.user} "{srv.password}"')

    def cmd(self, text: str | bytes) -> list[bytes]:
        tag = self.last_tag = next(self._tags)
        data = text.encode() if isinstance(text, str) else text
        self.raw.send(tag.encode() + b" " + data + b"\r\n")
        return self.raw.until(tag.encode() + b" ")

    def ok(self, text: str | bytes) -> list[bytes]:
        lines = self.cmd(text)
        assert b" OK " in lines[-1], lines
        return lines

    def append(self, mailbox: str, data: bytes, extra: str = "") -> list[bytes]:
        """APPEND ``data`` with a non-synchronising literal; ``extra`` is flags and a date."""
        head = f"APPEND {mailbox} {extra} {{{len(data)}+}}\r\n".replace("  ", " ")
        return self.ok(head.encode() + data)

    def close(self) -> None:
        self.raw.close()
