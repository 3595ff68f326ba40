"""No open relay (issue 7 point 6): the classic relay tricks, without authentication, on the MX
port, are all refused and nothing is queued for delivery elsewhere."""

from __future__ import annotations

import smtplib

import pytest
from conftest import RunningServer

TRICKS = [
    "carol%elsewhere.test@example.test",  # percent hack
    "@example.test:carol@elsewhere.test",  # source route (RFC 5321 §4.1.1.3, obsolete)
    '"carol@elsewhere.test"@example.test',  # quoted local part with an @
    "elsewhere.test!carol@example.test",  # UUCP bang path
    "elsewhere.test!carol",  # bare bang path
    "carol",  # unqualified
    "carol@[192.0.2.1]",  # IP literal
    "carol@[127.0.0.1]",  # IP literal of this host
    "carol@[IPv6:::1]",
    "carol@elsewhere.test",  # plain remote
    "carol@elsewhere.test.",  # trailing dot
    "carol@example.test.elsewhere.test",  # our domain as a prefix
    "carol@sub.example.test",  # a subdomain we do not serve
    "<carol@elsewhere.test>@example.test",
]


@pytest.mark.parametrize("sender", ["bob@else.test", ""])
def test_relay_tricks_are_refused(mailserver: RunningServer, sender: str) -> None:
    accepted = []
    for rcpt in TRICKS:  # a session each: refusals count towards the error limit
        with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
            s.ehlo("attacker.test")
            assert s.mail(sender)[0] == 250
            code, text = s.rcpt(rcpt)
            if code < 400:
                accepted.append((rcpt, code, text))
            assert s.docmd("DATA")[0] >= 500  # no recipient, no message
    assert accepted == []
    assert mailserver.server.queue.files.ids() == []  # nothing waits to go elsewhere
