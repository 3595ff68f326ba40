"""Several sessions on one mailbox, checked against a model (RFC 3501 §5.5, §7.4.1).

Three sessions select INBOX (in one server process, or one of them in a second process
sharing the data folder); a seeded random sequence of APPEND, STORE (by sequence number,
as each session numbers the messages), EXPUNGE, UID EXPUNGE, MOVE, COPY, FETCH, SEARCH and
NOOP runs across them.  Each session keeps its own view (the UIDs in sequence order), moved
only by the untagged EXISTS, EXPUNGE and FETCH responses it receives, and the test keeps the
true state.  After every command:

* a FETCH, STORE or SEARCH response carries no EXPUNGE (§7.4.1), and sequence numbers in
  FETCH responses stay within the session's view, with the UID the view expects;
* flags reported for a message that still exists are its true flags;
* after NOOP a session's view is exactly the true mailbox, in UID order, and ``UID FETCH
  (CHANGEDSINCE m)`` with its last HIGHESTMODSEQ ``m`` returns every message whose flags
  changed since (RFC 7162).

EXPUNGE removes the ``\\Deleted`` messages the session has been told of, never one that
arrived since, unseen by its client.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from conftest import RunningServer
from imaphelp import Session
from twistdhelp import OtherProcess

_EXISTS = re.compile(rb"\* (\d+) EXISTS$")
_EXPUNGE = re.compile(rb"\* (\d+) EXPUNGE$")
_FETCH = re.compile(rb"\* (\d+) FETCH \((.*)\)$")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
_HIGHESTMODSEQ = re.compile(rb"HIGHESTMODSEQ (\d+)")
_NO_EXPUNGE_DURING = ("FETCH", "STORE", "SEARCH")
KEYWORDS = ("\\Seen", "\\Flagged", "$Label1", "\\Deleted")


class View:
    """One session: its connection and the UIDs it has been told of, in sequence order
    (``None`` for a message announced by EXISTS whose UID it has not fetched yet)."""

    def __init__(self, srv: Any) -> None:
        self.session = Session(srv)
        self.uids: list[int | None] = []
        #: HIGHESTMODSEQ when this session last caught up (None: not yet).
        self.modseq: int | None = None
        self.apply(self.session.ok("SELECT INBOX"), "SELECT")

    def apply(self, lines: list[bytes], command: str) -> list[tuple[int, dict[str, bytes]]]:
        """Update the view from ``lines``; the FETCH responses as (uid, items) pairs."""
        fetched = []
        for line in lines[:-1]:
            if m := _EXISTS.match(line):
                count = int(m[1])
                assert count >= len(self.uids), (line, len(self.uids))  # §7.3.1: never shrinks
                self.uids += [None] * (count - len(self.uids))
            elif m := _EXPUNGE.match(line):
                assert command.split()[-1] not in _NO_EXPUNGE_DURING, (command, line)
                seq = int(m[1])
                assert 1 <= seq <= len(self.uids), (line, len(self.uids))
                del self.uids[seq - 1]
            elif m := _FETCH.match(line):
                seq = int(m[1])
                assert 1 <= seq <= len(self.uids), (command, line, len(self.uids))
                items: dict[str, bytes] = {}
                if u := _UID.search(m[2]):
                    uid = int(u[1])
                    known = self.uids[seq - 1]
                    assert known in (None, uid), (command, line, known)
                    self.uids[seq - 1] = uid
                if f := _FLAGS.search(m[2]):
                    items["FLAGS"] = f[1]
                if self.uids[seq - 1] is not None:
                    fetched.append((self.uids[seq - 1], items))
        return fetched


class Model:
    """The true INBOX (uid -> flags) and the sessions acting on it."""

    def __init__(self, servers: list[Any], rng: random.Random) -> None:
        self.rng = rng
        self.inbox: dict[int, set[str]] = {}
        self.views = [View(srv) for srv in servers]
        #: Per session: the UIDs whose flags changed since it last caught up (CONDSTORE).
        self.dirty: dict[int, set[int]] = {id(v): set() for v in self.views}
        self.moved = 0
        self.appended = 0

    def run(self, view: View, command: str) -> set[int]:
        """Send ``command``, check the flags it reports; the UIDs it reported on."""
        lines = view.session.cmd(command)
        fetched = view.apply(lines, command.split()[0] if command[:3] != "UID" else command)
        for uid, items in fetched:
            if "FLAGS" in items and uid in self.inbox:
                flags = set(items["FLAGS"].decode().split()) - {"\\Recent"}
                assert flags == self.inbox[uid], (command, uid, flags, self.inbox[uid])
        return {uid for uid, _ in fetched}

    def pick(self, view: View) -> tuple[str, list[int]]:
        """A random sequence set in ``view``'s numbering and the UIDs it names there."""
        known = [i for i, u in enumerate(view.uids, 1) if u is not None]
        chosen = sorted(self.rng.sample(known, min(len(known), self.rng.randint(1, 3))))
        return ",".join(map(str, chosen)), [view.uids[i - 1] for i in chosen]  # type: ignore[misc]

    def step(self) -> None:
        view = self.rng.choice(self.views)
        op = self.rng.choice(
            ["append", "store", "store", "expunge", "uid_expunge", "move", "copy", "fetch",
             "search", "noop"]
        )  # fmt: skip
        if op == "append" or len(self.inbox) < 3:
            self.appended += 1
            data = b"Subject: m%d\r\n\r\nbody\r\n" % self.appended
            lines = view.session.append("INBOX", data)
            view.apply(lines, "APPEND")
            m = _APPENDUID.search(lines[-1])
            assert m, lines[-1]
            self.inbox[int(m[1])] = set()
        elif None in view.uids or not view.uids:
            self.settle(view)  # numbers to pick from first
        elif op == "store":
            seqs, uids = self.pick(view)
            keyword = self.rng.choice(KEYWORDS)
            sign = self.rng.choice("+-")
            for uid in uids:
                if uid in self.inbox and (keyword in self.inbox[uid]) != (sign == "+"):
                    (self.inbox[uid].add if sign == "+" else self.inbox[uid].discard)(keyword)
                    for dirty in self.dirty.values():
                        dirty.add(uid)
            self.run(view, f"STORE {seqs} {sign}FLAGS ({keyword})")
        elif op == "expunge":
            # Only the \Deleted messages this session has been told of: one that another
            # session added and flagged since is never removed unseen.
            told = set(view.uids)
            self.run(view, "EXPUNGE")
            self._drop(lambda uid: uid in told and "\\Deleted" in self.inbox[uid])
        elif op == "uid_expunge":
            _, uids = self.pick(view)
            self.run(view, f"UID EXPUNGE {','.join(map(str, uids))}")
            self._drop(lambda uid: uid in uids and "\\Deleted" in self.inbox[uid])
        elif op == "move":
            seqs, uids = self.pick(view)
            self.run(view, f"MOVE {seqs} Archive")
            self.moved += sum(uid in self.inbox for uid in uids)
            self._drop(lambda uid: uid in uids)
        elif op == "copy":
            self.run(view, f"COPY {self.pick(view)[0]} Archive")
        elif op == "fetch":
            self.run(view, "FETCH 1:* (UID FLAGS)")
            known = [u for u in view.uids if u is not None]
            assert known == sorted(known)
            # New messages may be announced after the FETCH data (their UIDs still unknown);
            # expunged ones may still be in the view, unannounced.
            assert len(set(self.inbox) - set(known)) <= view.uids.count(None)
        elif op == "search":
            self.run(view, "SEARCH ALL")
        else:
            self.settle(view)

    def _drop(self, gone: object) -> None:
        for uid in [u for u in self.inbox if gone(u)]:  # type: ignore[operator]
            del self.inbox[uid]

    def settle(self, view: View) -> None:
        """NOOP, then fetch any unknown UIDs: the view is now the true mailbox.  Then CONDSTORE
        (RFC 7162 §3.1.4.1): every message whose flags changed since the session's last
        HIGHESTMODSEQ is among those ``CHANGEDSINCE`` that value returns."""
        self.run(view, "NOOP")
        if None in view.uids:
            self.run(view, "UID FETCH 1:* (FLAGS)")
        assert view.uids == sorted(self.inbox), (view.uids, sorted(self.inbox))
        if view.modseq is not None and view.uids:
            reported = self.run(view, f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {view.modseq})")
            missed = (self.dirty[id(view)] & set(self.inbox)) - reported
            assert not missed, (view.modseq, missed)
        status = view.session.ok("STATUS INBOX (HIGHESTMODSEQ)")
        view.modseq = int(_HIGHESTMODSEQ.search(b"".join(status))[1])  # type: ignore[index]
        self.dirty[id(view)] = set()


def _run(model: Model, steps: int) -> None:
    for _ in range(steps):
        model.step()
    for view in model.views:
        model.settle(view)
    status = model.views[0].session.ok("STATUS Archive (MESSAGES)")
    assert model.moved > 0 and b"MESSAGES" in status[0]
    for view in model.views:
        view.session.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sessions_agree_with_the_model(mailserver: RunningServer, seed: int) -> None:
    _run(Model([mailserver] * 3, random.Random(seed)), 250)


@pytest.mark.parametrize("seed", [4, 5])
def test_sessions_in_two_processes_agree_with_the_model(
    mailserver: RunningServer, seed: int
) -> None:
    # The third session is served by another process: it learns of the others' changes
    # from the folder's journal on disk, and they of its.
    other = OtherProcess(mailserver)
    try:
        _run(Model([mailserver, mailserver, other], random.Random(seed)), 250)
    finally:
        other.twistd.stop()
