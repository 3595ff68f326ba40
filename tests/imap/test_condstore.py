"""CONDSTORE (RFC 7162 §3), with the RFC's own exchanges where it gives them, plus STATUS=SIZE
(RFC 8438) and APPENDLIMIT (RFC 7889)."""

from __future__ import annotations

import re

from conftest import RunningServer
from imaphelp import Session, deliver


def highest(lines: list[bytes]) -> int:
    joined = b"\n".join(lines)
    return int(re.search(rb"HIGHESTMODSEQ (\d+)", joined).group(1))


def modseqs(lines: list[bytes]) -> dict[int, int]:
    return {
        int(m.group(1)): int(m.group(2))
        for m in (re.match(rb"\* (\d+) FETCH \(.*MODSEQ \((\d+)\)", x) for x in lines)
        if m
    }


def test_select_reports_highestmodseq_and_enable(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    s = Session(mailserver)
    assert s.ok("ENABLE CONDSTORE")[0] == b"* ENABLED CONDSTORE"
    assert s.ok("ENABLE CONDSTORE")[0] == b"* ENABLED"  # already on
    lines = s.ok("SELECT INBOX")
    assert highest(lines) > 0
    s.close()


def test_fetch_modseq_and_changedsince(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    s = Session(mailserver)
    start = highest(s.ok("SELECT INBOX (CONDSTORE)"))
    before = modseqs(s.ok("FETCH 1:* (FLAGS MODSEQ)"))
    assert set(before) == {1, 2, 3} and max(before.values()) == start
    lines = s.ok("STORE 2 +FLAGS (\\Flagged)")
    (after,) = modseqs(lines).values()  # RFC 7162 §3.2: MODSEQ in the STORE's FETCH
    assert after > start
    changed = s.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {start})")
    assert list(modseqs(changed)) == [2] and b"UID 2" in changed[0]
    assert s.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {after})")[:-1] == []
    assert b" BAD " in s.cmd("FETCH 1:* (FLAGS) (CHANGEDSINCE x)")[-1]
    s.close()


def test_conditional_store(mailserver: RunningServer) -> None:
    """RFC 7162 §3.1.3: messages changed since UNCHANGEDSINCE are not touched; MODIFIED lists
    them."""
    deliver(mailserver, 3)
    s = Session(mailserver)
    start = highest(s.ok("SELECT INBOX"))
    s.ok("STORE 2 +FLAGS.SILENT (\\Seen)")  # message 2 moves past `start`
    lines = s.ok(f"STORE 1:3 (UNCHANGEDSINCE {start}) +FLAGS.SILENT (\\Deleted)")
    assert lines[-1].split(b" ", 1)[1] == b"OK [MODIFIED 2] Conditional STORE failed"
    assert sorted(modseqs(lines)) == [1, 3]  # silent, but MODSEQ still reported
    flags = b"".join(s.ok("FETCH 1:3 FLAGS"))
    assert flags.count(b"\\Deleted") == 2
    uid_lines = s.ok(f"UID STORE 1:3 (UNCHANGEDSINCE {start}) -FLAGS (\\Deleted)")
    assert b"[MODIFIED 1:3]" in uid_lines[-1]  # UIDs, all changed since
    s.close()


def test_search_modseq(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    s = Session(mailserver)
    start = highest(s.ok("SELECT INBOX"))
    s.ok("STORE 3 +FLAGS (\\Answered)")
    lines = s.ok(f"SEARCH MODSEQ {start + 1}")
    m = re.match(rb"\* SEARCH 3 \(MODSEQ (\d+)\)", lines[0])
    assert m and int(m.group(1)) > start
    assert s.ok(f'SEARCH MODSEQ "/flags/\\\\answered" all {start + 1}')[0].startswith(b"* SEARCH 3")
    assert s.ok("SEARCH MODSEQ 999999999")[0] == b"* SEARCH"
    s.close()


def test_other_sessions_see_modseq_in_flag_updates(mailserver: RunningServer) -> None:
    deliver(mailserver)
    a, b = Session(mailserver), Session(mailserver)
    a.ok("SELECT INBOX")
    b.ok("SELECT INBOX (CONDSTORE)")
    a.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
    lines = b.ok("NOOP")
    assert re.match(rb"\* 1 FETCH \(FLAGS \(.*\\Flagged.*\) MODSEQ \(\d+\)\)", lines[0])
    a.close()
    b.close()


def test_status_items(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    s = Session(mailserver)
    caps = s.ok("CAPABILITY")[0]
    assert b"STATUS=SIZE" in caps and b"APPENDLIMIT=52428800" in caps and b"CONDSTORE" in caps
    line = s.ok("STATUS INBOX (MESSAGES SIZE HIGHESTMODSEQ APPENDLIMIT)")[0]
    m = re.match(
        rb"\* STATUS \"INBOX\" \(MESSAGES 2 SIZE (\d+) HIGHESTMODSEQ (\d+) APPENDLIMIT (\d+)\)",
        line,
    )
    assert m and int(m.group(1)) > 100 and int(m.group(3)) == 52428800
    s.close()
