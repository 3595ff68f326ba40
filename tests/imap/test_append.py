"""APPEND (RFC 3501 §6.3.11) with the RFC's example message, flags, dates and the failures."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session

# RFC 3501 §6.3.11: C: A003 APPEND saved-messages (\Seen) {310}
RFC_MESSAGE = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.COM>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.COM>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)


def test_append_as_in_rfc_3501(mailserver: RunningServer) -> None:
    assert len(RFC_MESSAGE) == 310
    s = Session(mailserver)
    s.ok("CREATE saved-messages")
    tag = s.append("saved-messages", RFC_MESSAGE, "(\\Seen)")[-1]
    assert b"OK [APPENDUID " in tag  # UIDPLUS (RFC 4315 §3)
    s.ok("SELECT saved-messages")
    lines = s.ok("FETCH 1 (FLAGS RFC822.SIZE ENVELOPE)")
    assert b"FLAGS (\\Recent \\Seen)" in lines[0] and b"RFC822.SIZE 310" in lines[0]
    assert b'"afternoon meeting"' in lines[0]
    s.close()


def test_append_with_date_and_keywords(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.append("INBOX", b"Subject: x\r\n\r\ny\r\n", '($Work \\Flagged) "17-Jul-1996 02:44:25 -0700"')
    s.ok("SELECT INBOX")
    line = s.ok("FETCH 1 (FLAGS INTERNALDATE)")[0]
    assert b'INTERNALDATE "17-Jul-1996 09:44:25 +0000"' in line
    assert b"$Work" in line and b"\\Flagged" in line
    s.close()


def test_append_failures(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    assert b"NO [TRYCREATE]" in s.cmd("APPEND Nowhere {1+}\r\nx")[-1]
    assert b" BAD " in s.cmd('APPEND INBOX "32-Jan-2026 00:00:00 +0000" {1+}\r\nx')[-1]
    assert b" BAD " in s.cmd("APPEND INBOX (\\Bogus) {1+}\r\nx")[-1]
    assert b" BAD " in s.cmd("APPEND INBOX")[-1]
    # A synchronising literal over the limit is refused before it is sent (RFC 7889).
    assert b"NO [TOOBIG]" in s.cmd("APPEND INBOX {999999999999}")[-1]
    s.close()
