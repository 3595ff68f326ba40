"""Limits (issue 7 point 4) not covered elsewhere: commands before login on IMAP, POP3 and SMTP
submission, and the header count of a message.  Line length, literal size
(``{4294967295}``), nesting depth and part count, connections per address and commands per
SMTP connection are tested in tests/integration/test_limits.py, tests/integration/test_imap.py
and tests/unit/test_mime.py."""

from __future__ import annotations

from pathlib import Path

from conftest import running_server
from rawclient import RawClient

from ourmail.config import Limits
from ourmail.mime import structure
from ourmail.mime.summary import summarize


def test_commands_before_login_are_limited(tmp_path: Path) -> None:
    with running_server(tmp_path, limits=Limits(max_commands_before_login=5)) as srv:
        imap = RawClient(srv.port("imaps"), tls=True)
        imap.line()
        imap.send(b"a NOOP\r\n" * 6)
        lines = [imap.line() for _ in range(6)]
        assert lines[:5] == [b"a OK NOOP completed"] * 5
        assert lines[5] == b"* BYE Too many commands before login" and imap.closed()

        pop = RawClient(srv.port("pop3s"), tls=True)
        pop.line()
        pop.send(b"CAPA\r\n" * 5 + b"NOOP\r\n")
        while not (line := pop.line()).startswith(b"-ERR"):
            pass
        assert line == b"-ERR Too many commands before login, closing connection"

        smtp = RawClient(srv.port("submissions"), tls=True)
        smtp.line()
        smtp.send(b"NOOP\r\n" * 6)
        assert [smtp.line()[:3] for _ in range(6)] == [b"250"] * 5 + [b"421"]

        mx = RawClient(srv.port("smtp"))  # the MX port has no login: its own limit applies
        mx.line()
        mx.send(b"NOOP\r\n" * 6)
        assert [mx.line()[:3] for _ in range(6)] == [b"250"] * 6


def test_header_count_is_bounded() -> None:
    many = b"".join(b"X-H%d: v\r\n" % n for n in range(50_000)) + b"Subject: last\r\n\r\nbody\r\n"
    part = structure.parse(many)
    assert len(part.fields) == structure.MAX_HEADERS
    summary = summarize(many)  # the index entry of such a message stays small
    assert len(summary.to_record()) < 10_000
