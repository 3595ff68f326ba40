"""IMAP4rev2 (RFC 9051) for clients that ENABLE it: ESEARCH answers, no RECENT, a LIST
response and [CLOSED] at SELECT, UTF-8 mailbox names; rev1 clients see no change."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver


def test_both_revisions_are_advertised(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    caps = s.ok("CAPABILITY")[0].split()
    assert b"IMAP4rev1" in caps and b"IMAP4rev2" in caps
    for cap in (b"SEARCHRES", b"BINARY", b"UIDPLUS", b"MOVE", b"LIST-STATUS", b"STATUS=SIZE"):
        assert cap in caps  # RFC 9051 §7.2.2: folded into the base protocol
    s.close()


def test_rev2_select_and_search(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    s = Session(mailserver)
    assert s.ok("ENABLE IMAP4rev2")[0] == b"* ENABLED IMAP4rev2"
    lines = s.ok("SELECT INBOX")
    assert b"* 3 EXISTS" in lines
    assert not any(b"RECENT" in x or b"[UNSEEN" in x for x in lines)
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in lines  # RFC 9051 §6.3.2
    tag = lines[-1].split()[0].decode()
    lines = s.ok("SEARCH UNSEEN")
    assert lines[0] == f'* ESEARCH (TAG "{s.last_tag}") ALL 1:3'.encode()
    lines = s.ok("UID SEARCH 9")
    assert lines[0] == f'* ESEARCH (TAG "{s.last_tag}") UID'.encode()
    assert b"\\Recent" not in s.ok("FETCH 1 FLAGS")[0]
    deliver(mailserver, 1)
    lines = s.ok("NOOP")
    assert b"* 4 EXISTS" in lines and not any(b"RECENT" in x for x in lines)
    lines = s.ok("SELECT Sent")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in lines
    assert tag
    s.close()


def test_rev2_mailbox_names_are_utf8(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("ENABLE IMAP4rev2")
    s.ok('CREATE "Entwürfe/Ärger"'.encode())
    lines = s.ok('LIST "" "Entw*"')
    assert '* LIST (\\HasChildren) "/" "Entwürfe"'.encode() in lines
    s.ok('SELECT "Entwürfe/Ärger"'.encode())
    s.close()
    rev1 = Session(mailserver)
    lines = rev1.ok('LIST "" "Entw*"')
    assert b'* LIST (\\HasChildren) "/" "Entw&APw-rfe"' in lines
    rev1.close()


def test_rev1_sessions_are_unchanged(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    s = Session(mailserver)
    lines = s.ok("SELECT INBOX")
    assert b"* 2 RECENT" in lines and not any(x.startswith(b"* LIST") for x in lines)
    assert s.ok("SEARCH ALL")[0] == b"* SEARCH 1 2"
    assert not s.ok("SELECT INBOX")[0].startswith(b"* OK [CLOSED]")
    s.close()
