"""SELECT, EXAMINE, CHECK, CLOSE (RFC 3501 §6.3.1, §6.3.2, §6.4.1, §6.4.2), with the RFC's
example exchanges."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver


def test_select_as_in_rfc_3501(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    other = Session(mailserver)
    other.ok("EXAMINE INBOX")  # EXAMINE claims no \\Recent
    other.close()
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    s.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
    s.ok("UNSELECT")
    # C: A142 SELECT INBOX
    # S: * 172 EXISTS / * 1 RECENT / * OK [UNSEEN 12] ... / * OK [UIDVALIDITY 3857529045] ...
    #    * OK [UIDNEXT 4392] ... / * FLAGS (...) / * OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)]
    # S: A142 OK [READ-WRITE] SELECT completed
    lines = s.ok("SELECT INBOX")
    assert b"* 3 EXISTS" in lines
    assert b"* 0 RECENT" in lines  # the first SELECT took them
    assert b"* OK [UNSEEN 2] First unseen message" in lines
    assert any(x.startswith(b"* OK [UIDVALIDITY ") for x in lines)
    assert b"* OK [UIDNEXT 4] Predicted next UID" in lines
    assert any(
        x.startswith(b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen") for x in lines
    )
    assert any(x.startswith(b"* OK [PERMANENTFLAGS (") and b"\\*)" in x for x in lines)
    assert lines[-1].endswith(b"OK [READ-WRITE] SELECT completed")
    s.close()


def test_recent_goes_to_one_session(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    a, b = Session(mailserver), Session(mailserver)
    assert b"* 2 RECENT" in a.ok("SELECT INBOX")
    assert b"* 0 RECENT" in b.ok("SELECT INBOX")
    assert b"\\Recent" in a.ok("FETCH 1 FLAGS")[0] and b"\\Recent" not in b.ok("FETCH 1 FLAGS")[0]
    a.close()
    b.close()


def test_examine_is_read_only(mailserver: RunningServer) -> None:
    deliver(mailserver, 1)
    s = Session(mailserver)
    # C: A932 EXAMINE blurdybloop ... S: A932 OK [READ-ONLY] EXAMINE completed
    lines = s.ok("EXAMINE INBOX")
    assert lines[-1].endswith(b"OK [READ-ONLY] EXAMINE completed")
    assert b"* OK [PERMANENTFLAGS ()] Flags permitted" in lines
    assert b"NO [READ-ONLY]" in s.cmd("STORE 1 +FLAGS (\\Flagged)")[-1]
    s.ok("FETCH 1 BODY[]")  # no \\Seen in a read-only mailbox
    assert b"\\Seen" not in s.ok("FETCH 1 FLAGS")[0]
    s.close()


def test_failed_select_leaves_no_mailbox_selected(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    assert b"NO [NONEXISTENT]" in s.cmd("SELECT Nowhere")[-1]
    assert b" BAD " in s.cmd("FETCH 1 FLAGS")[-1]  # RFC 3501 §6.3.1: deselected
    assert b" BAD " in s.cmd("SELECT")[-1]
    s.close()


def test_check_and_close(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    s = Session(mailserver)
    s.ok("EXAMINE INBOX")
    s.ok("CHECK")  # C: FXXZ CHECK  S: FXXZ OK CHECK Completed
    s.ok("SELECT INBOX")
    s.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    lines = s.ok("CLOSE")  # C: A341 CLOSE  S: A341 OK CLOSE completed
    assert len(lines) == 1  # no EXPUNGE responses (RFC 3501 §6.4.2)
    assert b"* 2 EXISTS" in s.ok("EXAMINE INBOX")
    s.ok("CLOSE")
    assert b" BAD " in s.cmd("CLOSE")[-1]  # nothing selected any more
    s.close()
