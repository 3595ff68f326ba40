"""STATUS (RFC 3501 §6.3.10), with the RFC's example, and the items later RFCs add."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver


def test_status_as_in_rfc_3501(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    s = Session(mailserver)
    # C: A042 STATUS blurdybloop (UIDNEXT MESSAGES)
    # S: * STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)
    lines = s.ok("STATUS INBOX (UIDNEXT MESSAGES)")
    assert lines[0] in (
        b'* STATUS "INBOX" (UIDNEXT 4 MESSAGES 3)',
        b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 4)',
    )
    line = s.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")[0]
    for item in (b"MESSAGES 3", b"RECENT 3", b"UIDNEXT 4", b"UNSEEN 3", b"UIDVALIDITY "):
        assert item in line
    s.ok("SELECT INBOX")
    s.ok("STORE 1 +FLAGS.SILENT (\\Seen \\Deleted)")
    line = s.ok("STATUS INBOX (UNSEEN DELETED SIZE HIGHESTMODSEQ APPENDLIMIT)")[0]
    assert b"UNSEEN 2" in line and b"DELETED 1" in line and b"HIGHESTMODSEQ " in line
    assert b"SIZE " in line and b"APPENDLIMIT " in line
    s.close()


def test_status_errors(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    assert b"NO [NONEXISTENT]" in s.cmd("STATUS Nowhere (MESSAGES)")[-1]
    assert b" BAD " in s.cmd("STATUS INBOX (BOGUS)")[-1]
    assert b" BAD " in s.cmd("STATUS INBOX MESSAGES")[-1]
    assert b" BAD " in s.cmd("STATUS INBOX")[-1]
    s.close()
