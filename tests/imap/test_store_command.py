"""STORE (RFC 3501 §6.4.6) with the RFC's example: FLAGS, +FLAGS, -FLAGS, .SILENT, keywords."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver


def test_store_as_in_rfc_3501(mailserver: RunningServer) -> None:
    deliver(mailserver, 4)
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    s.ok("STORE 2 +FLAGS.SILENT (\\Seen)")
    s.ok("STORE 4 +FLAGS.SILENT (\\Flagged \\Seen)")
    # C: A003 STORE 2:4 +FLAGS (\Deleted)
    # S: * 2 FETCH (FLAGS (\Deleted \Seen)) / * 3 FETCH (FLAGS (\Deleted))
    # S: * 4 FETCH (FLAGS (\Deleted \Flagged \Seen)) / A003 OK STORE completed
    lines = s.ok("STORE 2:4 +FLAGS (\\Deleted)")
    assert lines[:3] == [
        b"* 2 FETCH (FLAGS (\\Deleted \\Recent \\Seen))",
        b"* 3 FETCH (FLAGS (\\Deleted \\Recent))",
        b"* 4 FETCH (FLAGS (\\Deleted \\Flagged \\Recent \\Seen))",
    ]
    s.close()


def test_replace_remove_silent_and_keywords(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    first = Session(mailserver)
    first.ok("SELECT INBOX")  # takes \Recent, so the flags below are exact
    first.close()
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    assert s.ok("STORE 1 FLAGS ($Work \\Answered)")[0] == b"* 1 FETCH (FLAGS ($Work \\Answered))"
    assert s.ok("STORE 1 -FLAGS ($Work)")[0] == b"* 1 FETCH (FLAGS (\\Answered))"
    assert len(s.ok("STORE 1:2 +FLAGS.SILENT (\\Draft)")) == 1
    assert s.ok("FETCH 1:2 FLAGS")[:2] == [
        b"* 1 FETCH (FLAGS (\\Answered \\Draft))",
        b"* 2 FETCH (FLAGS (\\Draft))",
    ]
    s.ok("STORE 2 +FLAGS ($Forwarded)")
    assert b"$Forwarded" in s.ok("SELECT INBOX")[0]  # the FLAGS response lists keywords
    s.close()


def test_store_errors(mailserver: RunningServer) -> None:
    deliver(mailserver, 1)
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    for bad in ("STORE 1 FLAGS (\\Recent)", "STORE 1 FLAGS (\\Bogus)", "STORE 1 XFLAGS (\\Seen)",
                "STORE 1 +FLAGS", "STORE 5 +FLAGS (\\Seen)", "STORE 1 +FLAGS (a(b)"):  # fmt: skip
        assert b" BAD " in s.cmd(bad)[-1], bad
    s.close()
