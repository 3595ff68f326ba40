"""UID FETCH, UID STORE, UID COPY, UID SEARCH (RFC 3501 §6.4.8) with the RFC's example."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver


def test_uid_commands_as_in_rfc_3501(mailserver: RunningServer) -> None:
    deliver(mailserver, 5)
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    s.ok("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    s.ok("EXPUNGE")  # UIDs 3, 4, 5 are messages 1, 2, 3
    # C: A999 UID FETCH 4827313:4828442 FLAGS
    # S: * 23 FETCH (FLAGS (\Seen) UID 4827313) ... / A999 OK UID FETCH completed
    lines = s.ok("UID FETCH 4:5 FLAGS")
    assert [x.split(b" (", 1)[1] for x in lines[:2]] == [
        b"UID 4 FLAGS (\\Recent))",
        b"UID 5 FLAGS (\\Recent))",
    ]
    assert lines[0].startswith(b"* 2 FETCH")
    assert len(s.ok("UID FETCH 100:200 FLAGS")) == 1  # no such UIDs: nothing, and OK
    assert s.ok("UID FETCH 100:* UID")[0] == b"* 3 FETCH (UID 5)"  # * is the highest UID
    assert s.ok("UID STORE 3 +FLAGS (\\Seen)")[0] == b"* 1 FETCH (FLAGS (\\Recent \\Seen) UID 3)"
    assert s.ok("UID SEARCH SEEN")[0] == b"* SEARCH 3"
    s.ok("CREATE Saved")
    assert b"[COPYUID " in s.ok("UID COPY 3:4 Saved")[-1]
    assert b" BAD " in s.cmd("UID BOGUS 1")[-1]
    assert b" BAD " in s.cmd("UID")[-1]
    s.close()
