"""UIDPLUS (RFC 4315) and MOVE (RFC 6851)."""

from __future__ import annotations

import re

from conftest import RunningServer
from imaphelp import Session, deliver


def uidvalidity(s: Session, mailbox: str) -> int:
    line = next(x for x in s.ok(f"STATUS {mailbox} (UIDVALIDITY)") if x.startswith(b"* STATUS"))
    return int(re.search(rb"UIDVALIDITY (\d+)", line).group(1))


def test_append_reports_the_new_uid(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    validity = uidvalidity(s, "Drafts")
    message = b"Subject: draft\r\n\r\nx\r\n"
    s.raw.send(b"a1 APPEND Drafts (\\Draft) {%d}\r\n" % len(message))
    assert s.raw.line().startswith(b"+")
    s.raw.send(message + b"\r\n")
    tagged = s.raw.until(b"a1 ")[-1]
    m = re.match(rb"a1 OK \[APPENDUID (\d+) (\d+)\]", tagged)
    assert m and int(m.group(1)) == validity
    uid = int(m.group(2))
    s.ok("SELECT Drafts")
    assert f"UID {uid} ".encode() in b"".join(s.ok("FETCH 1 (UID FLAGS)"))
    s.close()


def test_copy_reports_copyuid(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    s = Session(mailserver)
    validity = uidvalidity(s, "Archive")
    s.ok("SELECT INBOX")
    tagged = s.ok("UID COPY 1:3 Archive")[-1]
    assert re.search(rb"\[COPYUID %d 1:3 1:3\]" % validity, tagged), tagged
    s.close()


def test_uid_expunge_removes_only_the_named_deleted_messages(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    s.ok("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    lines = s.ok("UID EXPUNGE 2")
    assert lines[:-1] == [b"* 2 EXPUNGE"]
    assert b" BAD " in s.cmd("UID EXPUNGE")[-1]
    assert b"* 2 EXISTS" in s.ok("SELECT INBOX")
    s.close()


def test_move_between_mailboxes(mailserver: RunningServer) -> None:
    deliver(mailserver, 4)
    s = Session(mailserver)
    validity = uidvalidity(s, "Trash")
    s.ok("SELECT INBOX")
    lines = s.ok("MOVE 2:3 Trash")
    # RFC 6851 §4.3: COPYUID first, then an EXPUNGE for each message, then the tagged OK.
    assert lines[0] == b"* OK [COPYUID %d 2:3 1:2] Moved" % validity
    assert lines[1:3] == [b"* 2 EXPUNGE", b"* 2 EXPUNGE"]
    lines = s.ok("UID MOVE 4 Trash")
    assert lines[1] == b"* 2 EXPUNGE"
    assert b" NO [TRYCREATE]" in s.cmd("MOVE 1 Nowhere")[-1]
    s.ok("EXAMINE INBOX")
    assert b" NO [READ-ONLY]" in s.cmd("MOVE 1 Trash")[-1]
    s.ok("SELECT Trash")
    subjects = b"".join(s.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert subjects.count(b"Subject: ") == 3
    s.close()


def test_multiappend_all_or_nothing(mailserver: RunningServer) -> None:
    """MULTIAPPEND (RFC 3502): one APPEND, several messages, consecutive APPENDUIDs."""
    s = Session(mailserver)
    one, two = b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"
    command = b'APPEND Drafts (\\Seen) " 1-Jan-2020 10:00:00 +0000" {%d+}\r\n%s {%d+}\r\n%s' % (
        len(one),
        one,
        len(two),
        two,
    )
    tagged = s.cmd(command)[-1]
    m = re.search(rb"\[APPENDUID \d+ (\d+):(\d+)\]", tagged)
    assert m and int(m.group(2)) == int(m.group(1)) + 1
    s.ok("SELECT Drafts")
    fetched = b"".join(s.ok("FETCH 1:2 (FLAGS INTERNALDATE)"))
    assert fetched.count(b"\\Seen") == 1 and b"01-Jan-2020 10:00:00" in fetched
    # A bad second message refuses the whole command: nothing is stored.
    assert b" BAD " in s.cmd(b"APPEND Drafts {3+}\r\nabc (\\Bogus)")[-1]
    assert b"* 2 EXISTS" in s.ok("SELECT Drafts")
    s.close()
