"""UTF8=ACCEPT (RFC 6855): UTF-8 mailbox names and APPEND UTF8 after ENABLE."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session


def test_mailbox_names_switch_to_utf8(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok('CREATE "&ANw-bersicht"')  # modified UTF-7 for Übersicht, before ENABLE
    before = b"".join(s.ok('LIST "" "*"'))
    assert b"&ANw-bersicht" in before and "Übersicht".encode() not in before
    assert s.ok("ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT"
    after = b"".join(s.ok('LIST "" "*"'))
    assert "Übersicht".encode() in after and b"&ANw-" not in after
    s.ok("CREATE " + '"Ärger"')
    s.ok('SELECT "Ärger"')
    s.close()
    again = Session(mailserver)  # a new session is back to modified UTF-7
    assert b"&AMQ-rger" in b"".join(again.ok('LIST "" "*"'))
    again.close()


def test_append_utf8_literal8(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("ENABLE UTF8=ACCEPT")
    message = "Subject: Grüße\r\nFrom: jörg@example.test\r\n\r\nHallo\r\n".encode()
    lines = s.cmd(b"APPEND INBOX UTF8 (~{%d+}\r\n%s)" % (len(message), message))
    assert b" OK [APPENDUID " in lines[-1]
    s.ok("SELECT INBOX")
    fetched = b"".join(s.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]"))
    assert "Grüße".encode() in fetched
    s.close()
