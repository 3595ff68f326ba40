"""COPY (RFC 3501 §6.4.7) and EXPUNGE (§6.4.3) with the RFC's examples."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver


def test_copy_as_in_rfc_3501(mailserver: RunningServer) -> None:
    deliver(mailserver, 4)
    s = Session(mailserver)
    s.ok("CREATE MEETING")
    s.ok("SELECT INBOX")
    s.ok("STORE 3 +FLAGS.SILENT (\\Flagged)")
    # C: A003 COPY 2:4 MEETING   S: A003 OK COPY completed
    tag = s.ok("COPY 2:4 MEETING")[-1]
    assert b"OK [COPYUID " in tag and tag.endswith(b" 2:4 1:3] COPY completed")
    assert b"* 4 EXISTS" in s.ok("SELECT INBOX")  # the originals stay
    s.ok("SELECT MEETING")
    assert b"\\Flagged" in s.ok("FETCH 2 FLAGS")[0]  # flags are copied
    assert b"NO [TRYCREATE]" in s.cmd("COPY 1 Nowhere")[-1]
    s.close()


def test_expunge_as_in_rfc_3501(mailserver: RunningServer) -> None:
    deliver(mailserver, 11)
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    s.ok("STORE 3,4,7,11 +FLAGS.SILENT (\\Deleted)")
    # C: A202 EXPUNGE
    # S: * 3 EXPUNGE / * 3 EXPUNGE / * 5 EXPUNGE / * 8 EXPUNGE / A202 OK EXPUNGE completed
    assert s.ok("EXPUNGE") == [
        b"* 3 EXPUNGE",
        b"* 3 EXPUNGE",
        b"* 5 EXPUNGE",
        b"* 8 EXPUNGE",
        b"t3 OK EXPUNGE completed",
    ]
    assert s.ok("UID SEARCH ALL")[0] == b"* SEARCH 1 2 5 6 8 9 10"
    s.ok("EXAMINE INBOX")
    assert b"NO [READ-ONLY]" in s.cmd("EXPUNGE")[-1]
    s.close()


def test_an_expunge_elsewhere_waits_until_numbers_are_safe(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    a, b = Session(mailserver), Session(mailserver)
    a.ok("SELECT INBOX")
    b.ok("SELECT INBOX")
    b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    # RFC 3501 §7.4.1: no EXPUNGE during FETCH, STORE or SEARCH; NOOP may carry it.
    assert not any(b"EXPUNGE" in x for x in a.ok("FETCH 1:* FLAGS"))
    assert not any(b"EXPUNGE" in x for x in a.ok("SEARCH ALL"))
    assert b"* 2 EXPUNGE" in a.ok("NOOP")
    a.close()
    b.close()
