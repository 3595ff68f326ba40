"""SEARCH (RFC 3501 §6.4.4), with the RFC's examples, every key family, and charsets."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session


def _mail(s: Session) -> None:
    messages = [
        ("Smith <smith@x.org>", "budget", "1-Jan-1994", b"numbers inside"),
        ("Jones <jones@y.org>", "lunch", "3-Feb-1994", b"pizza"),
        ("Smith <smith@x.org>", "Re: budget", "5-Mar-1994", b"more numbers"),
        ("=?utf-8?q?J=C3=BCrgen?= <j@z.de>", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "1-Apr-2026", "Größe".encode()),
    ]  # fmt: skip
    for sender, subject, day, body in messages:
        data = (
            (
                f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
                f"Date: {day} 10:00:00 +0000\r\nX-Tag: t{len(body)}\r\n\r\n"
            ).encode()
            + body
            + b"\r\n"
        )
        s.append("INBOX", data, f'"{day.rjust(11)} 10:00:00 +0000"')
    s.ok("SELECT INBOX")
    s.ok("STORE 2:3 +FLAGS.SILENT (\\Flagged)")


def test_search_as_in_rfc_3501(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    _mail(s)
    # C: A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"   S: * SEARCH 2 84 882
    assert s.ok('SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"')[0] == b"* SEARCH 2"
    # C: A283 SEARCH TEXT "string not in mailbox"   S: * SEARCH
    assert s.ok('SEARCH TEXT "string not in mailbox"')[0] == b"* SEARCH"
    # C: A284 SEARCH CHARSET UTF-8 TEXT {6}   (a UTF-8 string in a literal)
    word = "größe".encode()
    assert s.ok(b"SEARCH CHARSET UTF-8 TEXT {%d+}\r\n" % len(word) + word)[0] == b"* SEARCH 4"
    s.close()


def test_key_families(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    _mail(s)
    cases = {
        "ALL": "1 2 3 4", "FROM smith": "1 3", "SUBJECT budget": "1 3", "TO alice": "1 2 3 4",
        "FROM jürgen": "4", "SUBJECT grüße": "4", "BODY numbers": "1 3", "TEXT X-Tag": "1 2 3 4",
        "HEADER X-Tag t5": "2", "HEADER X-Tag \"\"": "1 2 3 4", "FLAGGED": "2 3",
        "UNFLAGGED": "1 4", "OR FROM jones SUBJECT re:": "2 3", "NOT OR FLAGGED FROM smith": "4",
        "(FROM smith FLAGGED)": "3", "2:3": "2 3", "*": "4", "UID 1,4": "1 4",
        "BEFORE 3-Feb-1994": "1", "ON 3-Feb-1994": "2", "SINCE 5-Mar-1994": "3 4",
        "SENTBEFORE 2-Jan-1994": "1", "SENTON 1-Apr-2026": "4", "SENTSINCE 1-Mar-1994": "3 4",
        "LARGER 100000": "", "SMALLER 100000": "1 2 3 4", "NEW": "1 2 3 4", "OLD": "",
        "RECENT": "1 2 3 4", "KEYWORD $Work": "", "UNKEYWORD $Work": "1 2 3 4",
        "DELETED": "", "UNSEEN": "1 2 3 4", "ANSWERED": "", "DRAFT": "",
    }  # fmt: skip
    for query, expected in cases.items():
        line = s.ok(f"SEARCH {query}".encode())[0]
        assert line == (b"* SEARCH " + expected.encode()).rstrip(), (query, line)
    assert s.ok("UID SEARCH FROM smith")[0] == b"* SEARCH 1 3"
    s.close()


def test_charsets_and_errors(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    _mail(s)
    assert s.ok("SEARCH CHARSET US-ASCII FROM smith")[0] == b"* SEARCH 1 3"
    # RFC 3501 §6.4.4: an unknown charset is NO [BADCHARSET (...)]
    assert b"NO [BADCHARSET (UTF-8 US-ASCII)]" in s.cmd("SEARCH CHARSET KOI8-R FROM x")[-1]
    for bad in ("SEARCH", "SEARCH BOGUS", "SEARCH FROM", "SEARCH SINCE 32-Jan-2026",
                "SEARCH LARGER x", "SEARCH (FROM x", "SEARCH UID a:b", "SEARCH OR ALL"):  # fmt: skip
        assert b" BAD " in s.cmd(bad)[-1], bad
    s.close()
