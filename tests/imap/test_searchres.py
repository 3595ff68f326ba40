"""SEARCHRES (RFC 5182): RETURN (SAVE) and ``$`` in later commands, with the RFC's examples."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver


def _seed(srv: RunningServer) -> Session:
    deliver(srv, 6)
    s = Session(srv)
    s.ok("SELECT INBOX")
    s.ok("STORE 2,4,6 +FLAGS.SILENT (\\Flagged)")
    return s


def test_save_then_fetch_and_store(mailserver: RunningServer) -> None:
    s = _seed(mailserver)
    # RFC 5182 §2.1: C: A282 SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
    #                S: A282 OK SEARCH completed, result saved
    lines = s.ok("SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM Smith")
    assert len(lines) == 1  # SAVE alone: no ESEARCH response
    lines = s.ok("FETCH $ (UID)")
    assert [x.split()[1] for x in lines[:-1]] == [b"2", b"4", b"6"]
    s.ok("STORE $ +FLAGS.SILENT (\\Answered)")
    assert s.ok("SEARCH ANSWERED")[0] == b"* SEARCH 2 4 6"
    assert s.ok("UID SEARCH UID $ NOT 4")[0] == b"* SEARCH 2 6"
    assert s.ok("SEARCH $")[0] == b"* SEARCH 2 4 6"
    s.close()


def test_save_with_min_max_and_count(mailserver: RunningServer) -> None:
    s = _seed(mailserver)
    # RFC 5182 §2.1: SAVE with MIN and MAX keeps only those two.
    lines = s.ok("UID SEARCH RETURN (SAVE MIN MAX) FLAGGED")
    assert lines[0].endswith(b"UID MIN 2 MAX 6")
    assert s.ok("SEARCH $")[0] == b"* SEARCH 2 6"
    lines = s.ok("SEARCH RETURN (SAVE COUNT) FLAGGED")
    assert lines[0].endswith(b"COUNT 3")
    assert s.ok("SEARCH $")[0] == b"* SEARCH 2 4 6"
    s.close()


def test_saved_result_follows_expunges_and_is_reset(mailserver: RunningServer) -> None:
    s = _seed(mailserver)
    s.ok("SEARCH RETURN (SAVE) FLAGGED")
    s.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    s.ok("EXPUNGE")
    assert s.ok("UID SEARCH $")[0] == b"* SEARCH 4 6"
    s.ok("CREATE Keep")
    assert b"COPYUID" in s.ok("COPY $ Keep")[-1]
    # A failed SEARCH ... SAVE leaves $ empty (RFC 5182 §2.1).
    assert b" BAD " in s.cmd("SEARCH RETURN (SAVE) BOGUSKEY")[-1]
    assert s.ok("SEARCH $")[0] == b"* SEARCH"
    s.ok("SEARCH RETURN (SAVE) ALL")
    s.ok("SELECT INBOX")  # a new selection starts with $ empty
    assert s.ok("SEARCH $")[0] == b"* SEARCH"
    assert b" BAD " in s.cmd("FETCH $,1 (UID)")[-1]
    s.close()
