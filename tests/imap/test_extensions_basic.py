"""CAPABILITY, ID (RFC 2971), ENABLE (RFC 5161), NAMESPACE (RFC 2342), UNSELECT (RFC 3691),
LIST with CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154), LITERAL+ (RFC 7888)."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver

ADVERTISED = [
    "IDLE",
    "ID",
    "ENABLE",
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "SPECIAL-USE",
    "LITERAL+",
    "SASL-IR",
]


def test_capabilities_before_and_after_login(mailserver: RunningServer) -> None:
    s = Session(mailserver, login=False)
    caps = s.cmd("CAPABILITY")[0].split()
    for name in ADVERTISED:
        assert name.encode() in caps
    assert b"AUTH=PLAIN" in caps
    after = s.ok(f'LOGIN {mailserver.user} "{mailserver.password}"')[-1]
    assert b"[CAPABILITY IMAP4rev1" in after and b"AUTH=PLAIN" not in after
    s.close()


def test_id(mailserver: RunningServer) -> None:
    s = Session(mailserver, login=False)
    lines = s.ok('ID ("name" "Thunderbird" "version" "128.0" "os" NIL)')  # before login too
    assert lines[0] == b'* ID ("name" "ourmail" "vendor" "ourmail")'
    assert s.ok("ID NIL")[0].startswith(b"* ID (")
    assert b" BAD " in s.cmd('ID ("odd")')[-1]
    assert b" BAD " in s.cmd("ID")[-1]
    assert b" BAD " in s.cmd("ID (" + '"k" "v" ' * 31 + ")")[-1]
    s.close()


def test_enable_and_namespace(mailserver: RunningServer) -> None:
    s = Session(mailserver, login=False)
    assert b" BAD " in s.cmd("ENABLE CONDSTORE")[-1]  # not before login (RFC 5161 §3.1)
    s.ok(f'LOGIN {mailserver.user} "{mailserver.password}"')
    assert s.ok("ENABLE X-UNKNOWN")[0] == b"* ENABLED"  # nothing to enable
    # The lists' archives are the shared namespace (docs/lists.md#the-archive).
    assert s.ok("NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL (("Lists/" "/"))'
    s.close()


def test_unselect_keeps_deleted_messages(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    s.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    s.ok("UNSELECT")
    assert b" BAD " in s.cmd("FETCH 1 FLAGS")[-1]  # back in the authenticated state
    assert b"* 2 EXISTS" in s.ok("SELECT INBOX")
    s.ok("CLOSE")  # CLOSE, unlike UNSELECT, expunges
    assert b"* 1 EXISTS" in s.ok("SELECT INBOX")
    s.close()


def test_list_shows_children_and_special_use(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("CREATE Projects/2026")
    lines = s.ok('LIST "" "*"')
    by_name = {line.rsplit(b" ", 1)[1].strip(b'"'): line for line in lines[:-1]}
    assert b"\\Sent" in by_name[b"Sent"] and b"\\Trash" in by_name[b"Trash"]
    assert b"\\Junk" in by_name[b"Junk"] and b"\\Drafts" in by_name[b"Drafts"]
    assert b"\\Archive" in by_name[b"Archive"]
    assert b"\\HasChildren" in by_name[b"Projects"]
    assert b"\\HasNoChildren" in by_name[b"Projects/2026"]
    assert b"\\Sent" not in by_name[b"INBOX"]
    s.close()


def test_non_synchronising_literal(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    message = b"Subject: plus\r\n\r\nno continuation needed\r\n"
    lines = s.cmd(b"APPEND INBOX {%d+}\r\n" % len(message) + message)
    assert not any(line.startswith(b"+") for line in lines)
    assert b" OK [APPENDUID " in lines[-1]
    s.close()
