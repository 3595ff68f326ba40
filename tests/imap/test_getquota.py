"""QUOTA (RFC 9208): one quota root per account, STORAGE and MESSAGE resources."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session, deliver

from ourmail.config import QuotaLimit


def test_quota_root_and_usage(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    assert s.ok("GETQUOTAROOT INBOX")[0] == b'* QUOTAROOT "INBOX"'  # no limit: no root
    assert b" NO " in s.cmd('GETQUOTA ""')[-1]
    mailserver.server.accounts.set_quota(mailserver.user, QuotaLimit(bytes=10 << 20, messages=5))
    deliver(mailserver, 2)
    lines = s.ok("GETQUOTAROOT INBOX")
    assert lines[0] == b'* QUOTAROOT "INBOX" ""'
    assert lines[1] == b'* QUOTA "" (STORAGE 1 10240 MESSAGE 2 5)'
    assert s.ok('GETQUOTA ""')[0] == lines[1]
    assert b" NO " in s.cmd('GETQUOTA "other"')[-1]
    assert b" NO [NOPERM]" in s.cmd('SETQUOTA "" (STORAGE 1)')[-1]
    assert b" NO [NONEXISTENT]" in s.cmd("GETQUOTAROOT Nowhere")[-1]
    s.close()


def test_append_over_quota_and_deleted_status(mailserver: RunningServer) -> None:
    mailserver.server.accounts.set_quota(mailserver.user, QuotaLimit(messages=2))
    deliver(mailserver, 2)
    s = Session(mailserver)
    assert b"NO [OVERQUOTA]" in s.cmd(b"APPEND INBOX {4+}\r\nx\r\n\r")[-1]
    s.ok("SELECT INBOX")
    s.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    line = s.ok("STATUS INBOX (DELETED DELETED-STORAGE)")[0]
    assert line.startswith(b'* STATUS "INBOX" (DELETED 1 DELETED-STORAGE ')
    s.close()
