"""POP3 beside IMAP and delivery, in two processes, checked against a model (issue 6).

A seeded random run: messages are delivered over SMTP to either process; IMAP sessions in
either process set flags, move messages to Archive and expunge; POP3 sessions (the main
process serves POP3) list, retrieve and delete, while the other process's IMAP session
changes the INBOX under them.  After every POP3 session, with the default ``hide`` policy:

* its listing was the INBOX at login less the messages POP3 deleted before (RFC 1939 §8:
  a snapshot), with each message's UIDL the same as in every earlier session;
* RETR gives the delivered bytes (Received: header aside);
* what it deleted stays in the INBOX for IMAP, flagged ``$POP3Deleted``, unless IMAP moved
  it away meanwhile; flags set by IMAP meanwhile are kept.
"""

from __future__ import annotations

import imaplib
import poplib
import random
import re
import smtplib

import pytest
from conftest import RunningServer, client_tls
from twistdhelp import OtherProcess

_SUBJECT = re.compile(rb"Subject: (m\d+)")


def _body(token: str) -> bytes:
    return f"From: bob@else.test\r\nSubject: {token}\r\n\r\nbody of {token}\r\n.dot\r\n".encode()


class Run:
    def __init__(self, servers: list[RunningServer | OtherProcess], rng: random.Random) -> None:
        self.servers, self.rng = servers, rng
        self.user, self.password = servers[0].user, servers[0].password
        self.inbox: set[str] = set()
        self.hidden: set[str] = set()
        self.flagged: set[str] = set()
        self.uidls: dict[str, bytes] = {}
        self.count = 0

    def deliver(self) -> None:
        srv = self.rng.choice(self.servers)
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
            for _ in range(self.rng.randint(1, 4)):
                self.count += 1
                token = f"m{self.count}"
                s.sendmail("bob@else.test", [self.user], _body(token))
                self.inbox.add(token)

    def imap(self, srv: RunningServer | OtherProcess) -> tuple[imaplib.IMAP4_SSL, dict[str, int]]:
        """A session with INBOX selected, and each message's token -> UID."""
        m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
        m.login(self.user, self.password)
        m.select("INBOX")
        tokens: dict[str, int] = {}
        typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        for item in data:
            if isinstance(item, tuple):
                uid = int(re.search(rb"UID (\d+)", item[0])[1])  # type: ignore[index]
                tokens[_SUBJECT.search(item[1])[1].decode()] = uid  # type: ignore[index]
        return m, tokens

    def imap_change(self, srv: RunningServer | OtherProcess) -> None:
        m, tokens = self.imap(srv)
        assert set(tokens) == self.inbox
        if tokens:
            token = self.rng.choice(sorted(tokens))
            op = self.rng.choice(["flag", "move", "expunge"])
            uid = str(tokens[token])
            if op == "flag":
                m.uid("STORE", uid, "+FLAGS", "(\\Flagged)")
                self.flagged.add(token)
            elif op == "move":
                assert m.uid("MOVE", uid, "Archive")[0] == "OK"
                self.inbox.discard(token)
            else:
                m.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
                m.uid("EXPUNGE", uid)
                self.inbox.discard(token)
        m.logout()

    def pop3_session(self) -> None:
        p = poplib.POP3_SSL("127.0.0.1", self.servers[0].port("pop3s"), context=client_tls())
        p.user(self.user)
        p.pass_(self.password)
        listed = self.inbox - self.hidden
        count = p.stat()[0]
        assert count == len(listed)
        by_number: dict[int, str] = {}
        for n in range(1, count + 1):
            text = b"\r\n".join(p.top(n, 0)[1])
            by_number[n] = _SUBJECT.search(text)[1].decode()  # type: ignore[index]
        assert set(by_number.values()) == listed
        for line in p.uidl()[1]:
            n, uidl = line.split()
            token = by_number[int(n)]
            assert self.uidls.setdefault(token, uidl) == uidl, token  # stable for life
        if count:
            n = self.rng.randint(1, count)
            lines = p.retr(n)[1]
            text = b"\r\n".join(lines[lines.index(b"From: bob@else.test") :]) + b"\r\n"
            assert text == _body(by_number[n])
        doomed = self.rng.sample(range(1, count + 1), min(count, self.rng.randint(0, 2)))
        for n in doomed:
            p.dele(n)
        if len(self.servers) > 1 and self.rng.random() < 0.5:
            self.imap_change(self.servers[1])  # the INBOX changes under the POP3 session
        p.quit()
        self.hidden |= {by_number[n] for n in doomed} & self.inbox

    def check_imap(self) -> None:
        m, tokens = self.imap(self.servers[0])
        assert set(tokens) == self.inbox
        if tokens:
            typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
            flags = {int(re.search(rb"UID (\d+)", d)[1]): d for d in data}  # type: ignore[index, arg-type]
            for token, uid in tokens.items():
                assert (b"$POP3Deleted" in flags[uid]) == (token in self.hidden), token
                assert (b"\\Flagged" in flags[uid]) == (token in self.flagged), token
        m.logout()


@pytest.mark.parametrize("seed", [1, 2])
def test_pop3_beside_imap_in_two_processes(mailserver: RunningServer, seed: int) -> None:
    other = OtherProcess(mailserver)
    try:
        run = Run([mailserver, other], random.Random(seed))
        for _ in range(25):
            action = run.rng.choice(["deliver", "deliver", "imap", "pop3"])
            if action == "deliver":
                run.deliver()
            elif action == "imap":
                run.imap_change(run.rng.choice(run.servers))
            else:
                run.pop3_session()
            run.check_imap()
        assert run.hidden and run.uidls
    finally:
        other.twistd.stop()
