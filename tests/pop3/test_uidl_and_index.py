"""UIDLs are stable for a message's life (restarts, index rebuilds, moves), and STAT, LIST and
UIDL come from the store's index without reading message files; RETR streams."""

from __future__ import annotations

import imaplib

import pytest
from conftest import RunningServer, client_tls
from pop3help import deliver, multiline, pop, raw
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.pop3.maildrop import uidl_of
from ourmail.store import folder as folder_mod
from ourmail.store.folder import MaildirFolder
from ourmail.store.userstore import MaildirStore


def _uidls(srv: RunningServer) -> list[bytes]:
    p = pop(srv)
    out = [x.split()[1] for x in p.uidl()[1]]
    p.quit()
    return out


def test_uidls_survive_a_restart_a_rebuild_and_moves(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    before = _uidls(mailserver)
    inbox_path = MaildirStore(mailserver.data).user(mailserver.user).root
    fresh = MaildirFolder(inbox_path, "INBOX")  # as a new process after a restart
    assert [uidl_of(fresh.message(u).key).encode() for u in fresh.uids()] == before
    (inbox_path / "ourmail-uidlist").write_text("damaged\n")  # rebuilt with new UIDs
    assert _uidls(mailserver) == before
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    m.login(mailserver.user, mailserver.password)
    m.select("INBOX")
    m.uid("MOVE", "1", "Archive")
    m.select("Archive")
    m.uid("MOVE", "1:*", "INBOX")  # there and back again
    m.logout()
    assert sorted(_uidls(mailserver)) == sorted(before)


def test_listing_reads_no_message_file(
    mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(mailserver, 20)
    reads: list[int] = []
    for name in ("read", "buffer"):
        original = getattr(folder_mod.StoredMessage, name)
        monkeypatch.setattr(
            folder_mod.StoredMessage,
            name,
            lambda self, _o=original: reads.append(1) or _o(self),
        )
    c = raw(mailserver)
    c.send(b"STAT\r\nLIST\r\n")
    assert c.line().startswith(b"+OK 20 ")
    c.line()
    assert len(multiline(c)) == 20
    c.send(b"UIDL\r\n")
    c.line()
    assert len(multiline(c)) == 20
    assert reads == []
    c.send(b"RETR 1\r\n")
    c.line()
    multiline(c)
    assert reads  # RETR does read the message
    c.close()


def test_a_big_message_streams_byte_for_byte(mailserver: RunningServer) -> None:
    line = b"." + b"x" * 70 + b"\r\n"  # every line needs stuffing
    data = b"Subject: big\r\n\r\n" + line * 20_000 + b"end without newline"
    user = blockingCallFromThread(reactor, mailserver.server.store.user, mailserver.user)
    blockingCallFromThread(reactor, user.deliver, data)
    p = pop(mailserver)
    resp, lines, octets = p.retr(1)
    assert resp == b"+OK %d octets" % len(data)
    assert b"\r\n".join(lines) == data  # poplib removes the stuffing
    resp, lines, _ = p.top(1, 2)
    assert lines == [b"Subject: big", b"", line[:-2], line[:-2]]
    p.quit()
