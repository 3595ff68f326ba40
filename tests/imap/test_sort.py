"""SORT (RFC 5256)."""

from __future__ import annotations

import smtplib

import pytest
from conftest import RunningServer
from imaphelp import Session

from ourmail.imap.sort import base_subject

MESSAGES = [  # (from, subject, date)
    ("zed@b.test", "Re: Budget", "Tue, 03 Nov 2026 10:00:00 +0000"),
    ("Anna <anna@c.test>", "[team] Budget", "Mon, 02 Nov 2026 10:00:00 +0000"),
    ("mike@a.test", "Fwd: Agenda (fwd)", "Wed, 04 Nov 2026 08:00:00 +0100"),
    ("bob@d.test", "Agenda", "not a date"),
]


@pytest.fixture
def session(mailserver: RunningServer) -> Session:
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        for n, (sender, subject, date) in enumerate(MESSAGES):
            body = "x" * (100 * (4 - n))
            msg = f"From: {sender}\r\nSubject: {subject}\r\nDate: {date}\r\n\r\n{body}\r\n"
            s.sendmail("bob@else.test", [mailserver.user], msg.encode())
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    return s


def test_sort_keys(session: Session) -> None:
    assert session.ok("SORT (FROM) UTF-8 ALL")[0] == b"* SORT 2 4 3 1"  # anna bob mike zed
    assert session.ok("SORT (SIZE) UTF-8 ALL")[0] == b"* SORT 4 3 2 1"
    assert session.ok("SORT (REVERSE SIZE) UTF-8 ALL")[0] == b"* SORT 1 2 3 4"
    assert session.ok("SORT (ARRIVAL) UTF-8 ALL")[0] == b"* SORT 1 2 3 4"
    # Message 4's Date cannot be parsed: its arrival time counts (the latest).
    assert session.ok("SORT (DATE) UTF-8 ALL")[0] == b"* SORT 2 1 3 4"
    # Base subjects: "agenda" (3, 4) before "budget" (1, 2); ties in sequence order.
    assert session.ok("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 3 4 1 2"
    assert session.ok("SORT (SUBJECT REVERSE SIZE) US-ASCII ALL")[0] == b"* SORT 3 4 1 2"
    assert session.ok("SORT (SUBJECT SIZE) UTF-8 ALL")[0] == b"* SORT 4 3 2 1"
    assert session.ok("UID SORT (FROM) UTF-8 SUBJECT agenda")[0] == b"* SORT 4 3"
    assert b"NO [BADCHARSET" in session.cmd("SORT (FROM) KOI8-R ALL")[-1]
    for bad in ("SORT () UTF-8 ALL", "SORT (REVERSE) UTF-8 ALL", "SORT (COLOR) UTF-8 ALL"):
        assert b" BAD " in session.cmd(bad)[-1]
    session.close()


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("Re: Fwd: [list] Hello (fwd)", "hello"),
        ("[fwd: Re: Hi]", "hi"),
        ("RE:  re:   spaced   out", "spaced out"),
        ("[tag]", "[tag]"),
        ("Fw: [x] Re: y", "y"),
    ],
)
def test_base_subject(subject: str, base: str) -> None:
    assert base_subject(subject) == base
