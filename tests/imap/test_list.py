"""LIST, LSUB, SUBSCRIBE, UNSUBSCRIBE (RFC 3501 §6.3.6-§6.3.9), with the RFC's examples."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, listed_names


def test_list_as_in_rfc_3501(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("CREATE Mail/foo")
    s.ok("CREATE Mail/meetings")
    s.ok("CREATE Mail/foo/deep")
    # C: A101 LIST "" ""   S: * LIST (\Noselect) "/" ""
    assert s.ok('LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""'
    # C: A202 LIST ~/Mail/ %   (here the reference is Mail/)
    assert listed_names(s.ok("LIST Mail/ %")) == [b"Mail/foo", b"Mail/meetings"]
    assert listed_names(s.ok('LIST "" Mail/*')) == [b"Mail/foo", b"Mail/foo/deep", b"Mail/meetings"]
    assert b"Mail" in listed_names(s.ok('LIST "" %')) and b"Mail/foo" not in listed_names(
        s.ok('LIST "" %')
    )
    assert listed_names(s.ok('LIST "" inbox')) == [b"INBOX"]  # INBOX in any case (§5.1)
    assert listed_names(s.ok('LIST "" nothing*')) == []
    assert b" BAD " in s.cmd("LIST")[-1]
    s.close()


def test_subscribe_unsubscribe_and_lsub(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("CREATE news/comp/mail/misc")
    # C: A002 SUBSCRIBE #news.comp.mail.mime   S: A002 OK SUBSCRIBE completed
    s.ok("SUBSCRIBE news/comp/mail/misc")
    # C: A002 LSUB "#news." "comp.mail.*"   S: * LSUB () "." #news.comp.mail.mime ...
    assert listed_names(s.ok("LSUB news/ comp/mail/*")) == [b"news/comp/mail/misc"]
    assert b"\\Subscribed" in s.ok('LIST (SUBSCRIBED) "" news/*')[0]
    s.ok("UNSUBSCRIBE news/comp/mail/misc")  # C: A002 UNSUBSCRIBE #news.comp.mail.mime
    assert listed_names(s.ok('LSUB "" news/*')) == []
    s.ok("SUBSCRIBE gone")  # a name need not exist (RFC 3501 §6.3.6)
    assert listed_names(s.ok('LSUB "" gone')) == [b"gone"]
    assert b"INBOX" in listed_names(s.ok('LSUB "" *'))  # the standard folders start subscribed
    s.close()
