"""Dovecot reads a Maildir that ourmail wrote: same folders, messages, flags and keywords."""

import imaplib
import re

from conftest import RunningServer, client_tls
from peers.dovecot import dovecot

MESSAGES = [
    b"From: a@else.test\r\nSubject: one\r\n\r\nfirst\r\n",
    b"From: b@else.test\r\nSubject: two\r\n\r\nsecond\r\n.dot line\r\n",
    b"From: c@else.test\r\nSubject: =?utf-8?q?dr=C3=A9i?=\r\n\r\nthird \xc3\xa9\r\n",
]


def snapshot(m: imaplib.IMAP4, folder: str) -> list[tuple[frozenset[bytes], bytes]]:
    m.select(folder)
    typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[])")
    out = []
    for item in data:
        if isinstance(item, tuple):
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).split()
            out.append((frozenset(f for f in flags if f != b"\\Recent"), item[1]))
    return out


def test_dovecot_sees_what_ourmail_wrote(mailserver: RunningServer) -> None:
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    m.login(mailserver.user, mailserver.password)
    m.create("Projects/2026")
    for i, msg in enumerate(MESSAGES):
        m.append("INBOX", None, None, msg)
        m.append("Projects/2026", "(\\Seen)" if i else None, None, msg)
    m.select("INBOX")
    m.store("1", "+FLAGS", "(\\Seen \\Flagged $Important)")
    m.store("2", "+FLAGS", "(\\Answered Work)")
    ours = {f: snapshot(m, f) for f in ("INBOX", "Projects/2026")}
    m.logout()

    maildir = mailserver.server.store.user(mailserver.user).root
    with dovecot(maildir, "alice", "secret") as (port, _copy):
        d = imaplib.IMAP4("127.0.0.1", port)
        d.login("alice", "secret")
        names = {re.search(rb'"/" "?([^"]*)"?$', x).group(1) for x in d.list()[1]}
        assert {b"INBOX", b"Projects", b"Projects/2026", b"Sent", b"Trash"} <= names
        for folder, expected in ours.items():
            assert snapshot(d, folder) == expected
        d.logout()
