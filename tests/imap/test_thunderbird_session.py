"""A Thunderbird-like session (issue 5): CAPABILITY, ID, ENABLE CONDSTORE, LIST-STATUS, SELECT
(CONDSTORE), UID FETCH CHANGEDSINCE, IDLE, as Thunderbird 128 sends them."""

from __future__ import annotations

import re
import time

from conftest import RunningServer
from imaphelp import Session, deliver


def test_thunderbird_like_resync(mailserver: RunningServer) -> None:
    deliver(mailserver, 5)
    s = Session(mailserver, login=False)
    caps = s.ok("CAPABILITY")[0]
    assert b"AUTH=PLAIN" in caps and b"ID" in caps
    s.ok(f'LOGIN {mailserver.user} "{mailserver.password}"')
    s.ok('ID ("name" "Thunderbird" "version" "128.5.0")')
    assert s.ok("ENABLE CONDSTORE")[0] == b"* ENABLED CONDSTORE"
    listing = s.ok('LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN))')
    assert b'* STATUS "INBOX" (MESSAGES 5 UNSEEN 5)' in listing
    selected = s.ok("SELECT INBOX (CONDSTORE)")
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", b" ".join(selected)).group(1))
    uidvalidity = re.search(rb"UIDVALIDITY (\d+)", b" ".join(selected)).group(1)
    headers = s.ok("UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)])")
    assert len([x for x in headers if b" FETCH (" in x]) == 5
    s.ok("UID STORE 3 +FLAGS (\\Seen)")
    s.close()

    # Next start: only what changed since the stored HIGHESTMODSEQ comes back.
    deliver(mailserver, 1)
    t = Session(mailserver)
    t.ok("ENABLE CONDSTORE")
    again = t.ok("SELECT INBOX (CONDSTORE)")
    assert uidvalidity in b" ".join(again)
    changed = t.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    uids = sorted(int(m.group(1)) for x in changed if (m := re.search(rb"UID (\d+)", x)))
    assert uids == [3, 6]
    t.raw.send(b"idle IDLE\r\n")
    assert t.raw.line() == b"+ idling"
    started = time.monotonic()
    deliver(mailserver, 1)
    assert t.raw.line() == b"* 7 EXISTS"
    assert time.monotonic() - started < 2
    t.raw.send(b"DONE\r\n")
    assert t.raw.until(b"idle ")[-1] == b"idle OK IDLE terminated"
    t.close()
