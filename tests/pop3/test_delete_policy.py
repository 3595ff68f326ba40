"""What DELE + QUIT does under each policy (hide, trash, expunge), chosen per domain and per
user, and that held mail is never erased."""

from __future__ import annotations

import imaplib
from pathlib import Path

from conftest import RunningServer, client_tls, running_server
from pop3help import deliver, pop
from zope.interface import implementer

from ourmail.config import Pop3Settings
from ourmail.interfaces import IRetention, IStoredMessage


def _imap(srv: RunningServer) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
    m.login(srv.user, srv.password)
    return m


def _delete_first_of_two(srv: RunningServer) -> bytes:
    """Deliver two messages, delete the first POP3 message; it is gone from POP3."""
    deliver(srv, 2)
    p = pop(srv)
    before = p.stat()[0]
    uidl = p.uidl(1).split()[2]
    p.dele(1)
    assert p.quit().startswith(b"+OK Bye (1 messages deleted)")
    p = pop(srv)
    assert p.stat()[0] == before - 1 and uidl not in b" ".join(p.uidl()[1])
    p.quit()
    return uidl


def test_hide_is_the_default_and_keeps_the_message(mailserver: RunningServer) -> None:
    _delete_first_of_two(mailserver)
    m = _imap(mailserver)
    assert m.select("INBOX")[1] == [b"2"]
    assert b"$POP3Deleted" in m.fetch("1", "FLAGS")[1][0]  # type: ignore[operator]
    m.logout()


def test_trash_moves_to_trash(tmp_path: Path) -> None:
    with running_server(tmp_path, pop3=Pop3Settings(delete="trash")) as srv:
        _delete_first_of_two(srv)
        m = _imap(srv)
        assert m.select("INBOX")[1] == [b"1"]
        assert m.select("Trash")[1] == [b"1"]
        assert b"Subject: pop 0" in m.fetch("1", "BODY.PEEK[HEADER]")[1][0][1]  # type: ignore[index]
        m.logout()


def test_expunge_erases_per_domain_and_user_override(tmp_path: Path) -> None:
    settings = Pop3Settings(domains={"example.test": "expunge"})
    with running_server(tmp_path, pop3=settings) as srv:
        _delete_first_of_two(srv)
        m = _imap(srv)
        assert m.select("INBOX")[1] == [b"1"]  # erased: the only policy that frees space
        m.logout()
        srv.server.accounts.set_pop3_delete(srv.user, "hide")  # the user's own policy wins
        _delete_first_of_two(srv)
        m = _imap(srv)
        assert m.select("INBOX")[1] == [b"3"]
        m.logout()


@implementer(IRetention)
class HoldSubjectZero:
    def may_erase(self, address: str, folder: str, message: IStoredMessage) -> bool:
        return b"Subject: pop 0" not in message.read()


def test_held_mail_is_never_erased(tmp_path: Path) -> None:
    policy = Pop3Settings(delete="expunge")
    with running_server(tmp_path, retention=HoldSubjectZero(), pop3=policy) as srv:
        deliver(srv, 2)
        p = pop(srv)
        p.dele(1)  # held
        p.dele(2)  # not held
        p.quit()
        p = pop(srv)
        assert p.stat()[0] == 0  # both gone from POP3
        p.quit()
        m = _imap(srv)
        assert m.select("INBOX")[1] == [b"1"]  # the held one is still stored
        assert b"$POP3Deleted" in m.fetch("1", "FLAGS")[1][0]  # type: ignore[operator]
        m.logout()
