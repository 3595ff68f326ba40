"""STARTTLS command injection (issue 7 point 5; the 2021 "NO STARTTLS" study): plaintext a
client (or a man in the middle) pipelines after STARTTLS/STLS is thrown away, never executed
once TLS is up.  SMTP and IMAP have the same test in tests/integration; this adds POP3, and the
outbound client's side (response injection) is in tests/unit/test_smtp_client.py."""

from __future__ import annotations

from conftest import RunningServer
from rawclient import RawClient


def test_pop3_stls_discards_pipelined_plaintext(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("pop3"))
    c.line()
    c.send(f"STLS\r\nUSER {mailserver.user}\r\nPASS {mailserver.password}\r\n".encode())
    assert c.line() == b"+OK Begin TLS negotiation"
    c.starttls()
    c.send(b"STAT\r\n")  # had USER/PASS run, this would be +OK 0 0
    assert c.line() == b"-ERR Command not valid in this state"
    c.close()


def test_pop3_injection_in_the_same_segment_as_the_greeting_reply(
    mailserver: RunningServer,
) -> None:
    c = RawClient(mailserver.port("pop3"))
    c.line()
    c.send(b"CAPA\r\nSTLS\r\nQUIT\r\n")  # QUIT must not close the session after TLS starts
    assert c.line().startswith(b"+OK")
    while c.line() != b".":
        pass
    assert c.line() == b"+OK Begin TLS negotiation"
    c.starttls()
    c.send(b"NOOP\r\n")
    assert c.line() == b"-ERR Command not valid in this state"  # alive, and not logged in
    c.close()
