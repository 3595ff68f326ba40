"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and the SPECIAL-USE options (RFC 6154)."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver


def listing(lines: list[bytes]) -> dict[bytes, bytes]:
    """Mailbox name -> the LIST line, from a command's response."""
    out = {}
    for line in lines[:-1]:
        if line.startswith(b"* LIST"):
            name = line.split(b'"/" ', 1)[1].split(b" (", 1)[0].strip(b'"')
            out[name] = line
    return out


def test_subscribed_selection_and_return(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("CREATE Groups/ietf")
    s.ok("CREATE Groups/debian")
    s.ok("SUBSCRIBE Groups/ietf")
    s.ok("SUBSCRIBE Gone")  # subscribed but does not exist
    subscribed = listing(s.ok('LIST (SUBSCRIBED) "" "*"'))
    assert b"\\Subscribed" in subscribed[b"Groups/ietf"]
    assert b"\\NonExistent" in subscribed[b"Gone"] and b"\\Subscribed" in subscribed[b"Gone"]
    assert b"Groups/debian" not in subscribed and b"Groups" not in subscribed
    everything = listing(s.ok('LIST "" "*" RETURN (SUBSCRIBED CHILDREN)'))
    assert b"\\Subscribed" in everything[b"Groups/ietf"]
    assert b"\\Subscribed" not in everything[b"Groups/debian"]
    assert b"\\HasChildren" in everything[b"Groups"]
    # RFC 5258 §3.5: RECURSIVEMATCH names the unsubscribed parent with CHILDINFO.
    recursive = listing(s.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"'))
    assert recursive[b"Groups"].endswith(b'("CHILDINFO" ("SUBSCRIBED"))')
    assert b" BAD " in s.cmd('LIST (RECURSIVEMATCH) "" "*"')[-1]
    assert b" BAD " in s.cmd('LIST (BOGUS) "" "*"')[-1]
    s.close()


def test_several_patterns(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    names = listing(s.ok('LIST "" ("INBOX" "Dr*" "Tr%")'))
    assert sorted(names) == [b"Drafts", b"INBOX", b"Trash"]
    s.close()


def test_list_status(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    s = Session(mailserver)
    lines = s.ok('LIST "" ("INBOX" "Sent") RETURN (STATUS (MESSAGES UNSEEN))')
    assert b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 3)' in lines
    assert b'* STATUS "Sent" (MESSAGES 0 UNSEEN 0)' in lines
    # Each STATUS follows its LIST line.
    inbox = lines.index(next(x for x in lines if x.startswith(b"* LIST") and b'"INBOX"' in x))
    assert lines[inbox + 1].startswith(b'* STATUS "INBOX"')
    assert b" BAD " in s.cmd('LIST "" "*" RETURN (STATUS)')[-1]
    s.close()


def test_special_use_selection(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("CREATE Projects")
    names = listing(s.ok('LIST (SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)'))
    assert sorted(names) == [b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash"]
    assert b"\\Junk" in names[b"Junk"]
    s.close()
