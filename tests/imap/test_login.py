"""CAPABILITY, NOOP, LOGOUT (RFC 3501 §6.1), LOGIN and AUTHENTICATE (§6.2.2, §6.2.3; SASL-IR,
RFC 4959), with the RFC's example exchanges."""

from __future__ import annotations

import base64

from conftest import RunningServer
from imaphelp import Session, deliver


def test_capability_noop_logout(mailserver: RunningServer) -> None:
    s = Session(mailserver, login=False)
    # C: abcd CAPABILITY   S: * CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED
    lines = s.ok("CAPABILITY")
    assert lines[0].startswith(b"* CAPABILITY IMAP4rev1 IMAP4rev2 ") and len(lines) == 2
    assert s.ok("NOOP") == [b"t1 OK NOOP completed"]  # C: a002 NOOP  S: a002 OK NOOP completed
    # C: A023 LOGOUT   S: * BYE IMAP4rev1 Server logging out   S: A023 OK LOGOUT completed
    s.raw.send(b"z LOGOUT\r\n")
    assert s.raw.line().startswith(b"* BYE")
    assert s.raw.line() == b"z OK LOGOUT completed"
    assert s.raw.closed()


def test_noop_reports_changes(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    deliver(mailserver, 1)
    # C: a047 NOOP   S: * 22 EXPUNGE / * 23 EXISTS / * 3 RECENT / * 14 FETCH (FLAGS ...)
    lines = s.ok("NOOP")
    assert b"* 1 EXISTS" in lines and b"* 1 RECENT" in lines
    s.close()


def test_login_as_in_rfc_3501(mailserver: RunningServer) -> None:
    s = Session(mailserver, login=False)
    # C: a001 LOGIN SMITH SESAME   S: a001 OK LOGIN completed
    assert b"NO [AUTHENTICATIONFAILED]" in s.cmd(f"LOGIN {mailserver.user} SESAME")[-1]
    tag = s.ok(f'LOGIN {mailserver.user} "{mailserver.password}"')[-1]
    assert b"OK [CAPABILITY " in tag  # RFC 3501 §7.1: capabilities after login
    assert b" BAD " in s.cmd(f'LOGIN {mailserver.user} "{mailserver.password}"')[-1]
    s.close()


def test_authenticate_plain_with_and_without_initial_response(mailserver: RunningServer) -> None:
    creds = base64.b64encode(f"\0{mailserver.user}\0{mailserver.password}".encode()).decode()
    s = Session(mailserver, login=False)
    s.raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert s.raw.line() == b"+ "  # RFC 3501 §6.2.2: an empty challenge
    s.raw.send(creds.encode() + b"\r\n")
    assert s.raw.until(b"a ")[-1].startswith(b"a OK")
    s.close()
    s = Session(mailserver, login=False)
    assert s.ok(f"AUTHENTICATE PLAIN {creds}")[-1].startswith(b"t0 OK")  # SASL-IR, RFC 4959
    s.close()
    s = Session(mailserver, login=False)
    s.raw.send(b"c AUTHENTICATE PLAIN\r\n")
    s.raw.line()
    s.raw.send(b"*\r\n")  # the client cancels
    assert s.raw.until(b"c ")[-1].startswith(b"c BAD")
    assert b" NO Unsupported authentication mechanism" in s.cmd("AUTHENTICATE CRAM-MD5")[-1]
    s.close()
