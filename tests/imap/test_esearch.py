"""ESEARCH (RFC 4731), with the RFC's example exchanges."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver


def test_esearch_return_options(mailserver: RunningServer) -> None:
    deliver(mailserver, 6)
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    s.ok("STORE 2,4:5 +FLAGS.SILENT (\\Seen)")
    # RFC 4731 §3.1: A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
    lines = s.ok("SEARCH RETURN (MIN COUNT) SEEN SINCE 1-Feb-1994 NOT FROM Smith")
    tag = lines[-1].split(b" ")[0].decode()
    assert lines[0] == f'* ESEARCH (TAG "{tag}") MIN 2 COUNT 3'.encode()
    lines = s.ok("UID SEARCH RETURN () UNSEEN")  # empty: ALL
    assert lines[0].endswith(b" UID ALL 1,3,6")
    lines = s.ok("UID SEARCH RETURN (MIN MAX COUNT ALL) SEEN")
    assert lines[0].endswith(b" UID MIN 2 MAX 5 COUNT 3 ALL 2,4:5")
    lines = s.ok("SEARCH RETURN (MIN MAX COUNT ALL) LARGER 100000")
    assert lines[0].endswith(b'") COUNT 0')  # nothing matched: no MIN, MAX or ALL
    assert b" BAD " in s.cmd("SEARCH RETURN (BOGUS) ALL")[-1]
    assert b" BAD " in s.cmd("SEARCH RETURN MIN ALL")[-1]
    s.close()


def test_esearch_with_modseq(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    line = s.ok("SEARCH RETURN (COUNT) MODSEQ 1")[0]
    assert b"COUNT 2 MODSEQ " in line
    s.close()
