"""CREATE, DELETE, RENAME (RFC 3501 §6.3.3-§6.3.5), with the RFC's example exchanges, and names
that must never leave the user's directory."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver, listed_names


def test_create_as_in_rfc_3501(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    # C: A003 CREATE owatagusiam/   C: A004 CREATE owatagusiam/blurdybloop
    s.ok("CREATE owatagusiam/")
    s.ok("CREATE owatagusiam/blurdybloop")
    assert listed_names(s.ok('LIST "" owatagusiam*')) == [
        b"owatagusiam",
        b"owatagusiam/blurdybloop",
    ]
    assert b"NO [ALREADYEXISTS]" in s.cmd("CREATE owatagusiam")[-1]
    assert b"NO" in s.cmd("CREATE inbox")[-1]
    s.ok("CREATE a/b/c")  # missing parents are made too
    assert listed_names(s.ok('LIST "" a*')) == [b"a", b"a/b", b"a/b/c"]
    s.close()


def test_delete_as_in_rfc_3501(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("CREATE blurdybloop")
    s.ok("CREATE foo/bar")
    # C: A683 DELETE blurdybloop  S: A683 OK DELETE completed
    s.ok("DELETE blurdybloop")
    # C: A684 DELETE foo  S: A684 NO Name "foo" has inferior hierarchical names
    assert b" NO " in s.cmd("DELETE foo")[-1]
    s.ok("DELETE foo/bar")  # C: A685 DELETE foo/bar  S: A685 OK DELETE Completed
    s.ok("DELETE foo")
    assert listed_names(s.ok('LIST "" foo*')) == []
    assert b" NO " in s.cmd("DELETE INBOX")[-1]
    assert b"NO [NONEXISTENT]" in s.cmd("DELETE nothing")[-1]
    s.close()


def test_delete_the_selected_mailbox(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("CREATE Old")
    s.ok("SELECT Old")
    s.ok("DELETE Old")
    assert b" BAD " in s.cmd("FETCH 1 FLAGS")[-1]  # deselected with it
    s.close()


def test_rename_as_in_rfc_3501(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("CREATE blurdybloop")
    s.ok("CREATE foo/bar")
    s.ok("RENAME blurdybloop sarasoop")  # C: A683 RENAME blurdybloop sarasoop
    s.ok("RENAME foo zowie")  # C: A684 RENAME foo zowie
    # C: A685 LIST "" *  S: ... sarasoop, zowie, zowie/bar
    names = listed_names(s.ok('LIST "" *'))
    assert {b"sarasoop", b"zowie", b"zowie/bar"} <= set(names)
    assert not {b"blurdybloop", b"foo", b"foo/bar"} & set(names)
    assert b"NO [ALREADYEXISTS]" in s.cmd("RENAME sarasoop zowie")[-1]
    assert b"NO [NONEXISTENT]" in s.cmd("RENAME nothing else")[-1]
    assert b" NO " in s.cmd("RENAME zowie zowie/inner")[-1]
    s.close()


def test_rename_inbox_moves_its_messages(mailserver: RunningServer) -> None:
    deliver(mailserver, 2)
    s = Session(mailserver)
    s.ok("RENAME INBOX Old-Inbox")  # RFC 3501 §6.3.5: INBOX stays, empty
    assert b"* 0 EXISTS" in s.ok("SELECT INBOX")
    assert b"* 2 EXISTS" in s.ok("SELECT Old-Inbox")
    s.close()


def test_names_never_leave_the_users_tree(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    for name in ('".."', '"../x"', '"a/../b"', '"."', '"/abs"', '"a//b"', '"x/"', '"&Jjo"'):
        reply = s.cmd(f"CREATE {name}")[-1]
        assert b" NO " in reply or b" BAD " in reply or name == '"x/"', (name, reply)
    assert s.cmd("CREATE {3+}\r\na\x00b")[-1].split()[1] in (b"NO", b"BAD")  # NUL in a literal
    assert b" NO " in s.cmd('CREATE "' + "x" * 300 + '"')[-1]
    listed = listed_names(s.ok('LIST "" *'))
    assert all(b".." not in n and not n.startswith(b"/") for n in listed)
    s.close()
