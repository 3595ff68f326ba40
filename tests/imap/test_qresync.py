"""QRESYNC (RFC 7162 §3.2): ENABLE, SELECT (QRESYNC ...), VANISHED (EARLIER), UID FETCH
(CHANGEDSINCE n VANISHED), VANISHED instead of EXPUNGE, and [CLOSED]; with the RFC's
exchanges where it gives them."""

from __future__ import annotations

import re

from conftest import RunningServer
from imaphelp import Session, deliver


def _value(lines: list[bytes], code: str) -> int:
    m = re.search(rb"\[" + code.encode() + rb" (\d+)\]", b"\n".join(lines))
    assert m, lines
    return int(m.group(1))


def _setup(srv: RunningServer, count: int) -> tuple[Session, int, int]:
    deliver(srv, count)
    s = Session(srv)
    assert s.ok("ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC"
    lines = s.ok("SELECT INBOX")
    return s, _value(lines, "UIDVALIDITY"), _value(lines, "HIGHESTMODSEQ")


def test_select_without_enable_is_bad(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    assert b" BAD " in s.cmd("SELECT INBOX (QRESYNC (1 1))")[-1]
    s.ok("ENABLE QRESYNC")
    assert b" BAD " in s.cmd("SELECT INBOX (QRESYNC (1))")[-1]
    assert b" BAD " in s.cmd("SELECT INBOX (QRESYNC (1 1 x:y))")[-1]
    assert b" BAD " in s.cmd("SELECT INBOX (FOO)")[-1]
    s.close()


def test_resync_after_changes_made_elsewhere(mailserver: RunningServer) -> None:
    s, validity, modseq = _setup(mailserver, 6)
    s.ok("UNSELECT")
    other = Session(mailserver)
    other.ok("SELECT INBOX")
    other.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
    other.ok("STORE 3,5 +FLAGS.SILENT (\\Deleted)")
    other.ok("EXPUNGE")
    other.close()
    deliver(mailserver, 1)  # UID 7
    lines = s.ok(f"SELECT INBOX (QRESYNC ({validity} {modseq}))")
    assert b"* VANISHED (EARLIER) 3,5" in lines
    fetches = [x for x in lines if b" FETCH " in x]
    assert fetches[0].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (")
    assert any(b"UID 7 " in x for x in fetches)  # new since: also reported
    assert b"* 5 EXISTS" in lines
    # Known UIDs limit the report (RFC 7162 §3.2.5.1).
    lines = s.ok(f"SELECT INBOX (QRESYNC ({validity} {modseq} 1:4 (1:3 1,2,4)))")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert b"* VANISHED (EARLIER) 3" in lines
    assert not any(b"UID 7 " in x for x in lines)
    # Another UIDVALIDITY: a plain SELECT.
    lines = s.ok(f"SELECT INBOX (QRESYNC ({validity + 1} {modseq}))")
    assert not any(b"VANISHED" in x or b" FETCH " in x for x in lines)
    s.close()


def test_expunge_is_reported_as_vanished(mailserver: RunningServer) -> None:
    s, _, _ = _setup(mailserver, 4)
    s.ok("STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    lines = s.ok("EXPUNGE")
    assert lines[0] == b"* VANISHED 2:3" and not any(b"EXPUNGE" in x for x in lines[:-1])
    other = Session(mailserver)
    other.ok("SELECT INBOX")
    other.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.ok("EXPUNGE")
    other.close()
    assert b"* VANISHED 1" in s.ok("NOOP")
    s.ok("CREATE Other")
    lines = s.ok("UID MOVE 4 Other")
    assert b"* VANISHED 4" in lines
    s.close()


def test_uid_fetch_vanished_modifier(mailserver: RunningServer) -> None:
    s, _, modseq = _setup(mailserver, 5)
    s.ok("STORE 1,4 +FLAGS.SILENT (\\Deleted)")
    s.ok("EXPUNGE")
    s.ok("UID STORE 2 +FLAGS.SILENT (\\Seen)")
    # RFC 7162 §3.2.6: C: s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)
    lines = s.ok(f"UID FETCH 1:3 (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 1"  # 4 is outside the UID set
    assert any(b"UID 2 " in x and b"\\Seen" in x for x in lines)
    assert b" BAD " in s.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")[-1]
    assert b" BAD " in s.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHING)")[-1]
    s.close()


def test_vanished_when_the_change_log_is_gone(mailserver: RunningServer) -> None:
    # A modseq below what the folder remembers: every absent UID below UIDNEXT is reported,
    # computed on ranges.
    s, validity, _ = _setup(mailserver, 3)
    s.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    s.ok("EXPUNGE")
    s.ok("UNSELECT")
    sel = s.ok(f"SELECT INBOX (QRESYNC ({validity} 0))")
    assert b"* VANISHED (EARLIER) 2" in sel
    s.close()


def test_vanished_since_unknown_history_uses_ranges() -> None:
    from ourmail.imap.selected import SelectedMailbox
    from ourmail.store.memory import MemoryFolder

    folder = MemoryFolder("INBOX")
    for _ in range(5):
        folder.append(b"Subject: x\r\n\r\nx\r\n")
    folder.expunge([2, 3])
    sel = SelectedMailbox(folder, False, set())
    folder.changes_since = lambda modseq: None  # type: ignore[method-assign]
    folder.uidnext = 2**32 - 1  # type: ignore[misc]
    assert sel.vanished_since(0, None) == f"2:3,6:{2**32 - 2}"
    assert sel.vanished_since(0, [(1, 3), (10, 11)]) == "2:3,10:11"
