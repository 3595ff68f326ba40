"""Learning from Junk moves through a real server and a real spamd: imaplib MOVE and COPY
into Junk teach spam, out of Junk (not to Trash) ham, shown by ``sa-learn --dump magic``;
a message is learned once per direction; a scanner that is down or never answers neither
delays the IMAP command nor loses the request, even across a restart."""

from __future__ import annotations

import imaplib
import socket
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, client_tls, running_server
from peers.spamd import Spamd, free_port, spamd  # noqa: F401 (a fixture)
from twisted.internet import reactor

from ourmail.config import FilterSettings, LearningSettings
from ourmail.filters.spamc import SpamdClient, SpamdLearner

FAST = FilterSettings(learning=LearningSettings(retry_min=0.3, retry_max=0.6, timeout=5))


def message(words: str) -> bytes:
    """A message Bayes has not seen (it counts a message once by To, Date and body)."""
    return (
        b"From: Sender <sender@else.test>\r\nTo: alice@example.test\r\n"
        + f"Date: {formatdate()}\r\nSubject: hello\r\n"
        f"Message-ID: <{uuid.uuid4()}@else.test>\r\n\r\n{words} {uuid.uuid4()}\r\n".encode()
    )


def learner(address: str, timeout: float = 30.0) -> SpamdLearner:
    return SpamdLearner(SpamdClient(reactor, address, timeout))


def login(srv: RunningServer) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
    m.login(srv.user, srv.password)
    return m


def append(m: imaplib.IMAP4_SSL, folder: str, data: bytes) -> int:
    """APPEND ``data``; its UID (RFC 4315 APPENDUID)."""
    typ, resp = m.append(folder, "", None, data)
    assert typ == "OK", resp
    return int(resp[0].split(b"APPENDUID ")[1].split()[1].rstrip(b"]"))


def uid_cmd(m: imaplib.IMAP4_SSL, command: str, uid: int, folder: str) -> float:
    """``UID MOVE`` or ``UID COPY``; the seconds it took."""
    start = time.monotonic()
    typ, resp = m.uid(command, str(uid), folder)
    assert typ == "OK", resp
    return time.monotonic() - start


def wait_for(test: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = test()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout} s: {test}")


def requests(srv: RunningServer) -> dict[str, int]:
    """The training queue's requests by state ("pending", "learned")."""
    path = srv.data / "filters" / "learning" / "learning.sqlite"
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall())


def learned(srv: RunningServer) -> list[int]:
    """The directions of the learned requests (1 spam, 0 ham)."""
    path = srv.data / "filters" / "learning" / "learning.sqlite"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT spam FROM requests WHERE state = 'learned' ORDER BY spam")
        return [spam for (spam,) in rows.fetchall()]


def attempts(srv: RunningServer) -> int:
    path = srv.data / "filters" / "learning" / "learning.sqlite"
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COALESCE(MAX(attempts), 0) FROM requests").fetchone()[0])


@pytest.fixture
def own_spamd() -> Iterator[Spamd]:
    """A spamd of this test alone (not started: the test starts and stops it), with an empty
    Bayes database."""
    import os
    import pwd
    import shutil

    work = Path(tempfile.mkdtemp(prefix="ourmail-spamd-"))
    (work / "bayes").mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(work / "bayes", nobody.pw_uid, nobody.pw_gid)
    os.chmod(work, 0o755)
    server = Spamd(work, free_port())
    yield server
    server.stop()
    shutil.rmtree(work, ignore_errors=True)


def test_into_junk_is_spam_out_of_junk_is_ham_and_trash_teaches_nothing(
    tmp_path: Path,
    spamd: Spamd,  # noqa: F811
) -> None:
    with running_server(tmp_path, learner=learner(spamd.address), filters=FAST) as srv:
        m = login(srv)
        m.select("INBOX")
        moved = append(m, "INBOX", message("cheap pills casino winner"))
        copied = append(m, "INBOX", message("lottery prize claim now"))
        before = spamd.magic()
        uid_cmd(m, "MOVE", moved, "Junk")
        uid_cmd(m, "COPY", copied, "Junk")
        wait_for(lambda: spamd.magic()["nspam"] == before["nspam"] + 2)
        assert spamd.magic()["nham"] == before["nham"]

        m.select("Junk")
        in_junk = append(m, "Junk", message("minutes of the council meeting"))
        to_trash = append(m, "Junk", message("the library opening hours change"))
        before = spamd.magic()
        uid_cmd(m, "MOVE", to_trash, "Trash")  # deleting junk teaches nothing
        uid_cmd(m, "MOVE", in_junk, "INBOX")  # a mistake corrected: ham
        wait_for(lambda: spamd.magic()["nham"] == before["nham"] + 1)
        time.sleep(0.5)
        assert spamd.magic() == {"nspam": before["nspam"], "nham": before["nham"] + 1}
        assert requests(srv) == {"learned": 3}
        m.logout()


def test_a_message_is_learned_once_per_direction(
    tmp_path: Path,
    spamd: Spamd,  # noqa: F811
) -> None:
    with running_server(tmp_path, learner=learner(spamd.address), filters=FAST) as srv:
        m = login(srv)
        m.select("INBOX")
        data = message("win a free cruise")
        uid = append(m, "INBOX", data)
        uid_cmd(m, "COPY", uid, "Junk")
        uid_cmd(m, "COPY", uid, "Junk")  # the same message again
        again = append(m, "INBOX", data)  # and an identical copy of it
        uid_cmd(m, "MOVE", again, "Junk")
        wait_for(lambda: requests(srv).get("learned") == 1)
        m.select("Junk")
        typ, data_uids = m.uid("SEARCH", "ALL")
        for junk_uid in data_uids[0].split():
            uid_cmd(m, "COPY", int(junk_uid), "Archive")  # out of Junk: ham, once
        # Learning ham forgets the spam record (so moving it back would teach spam again).
        wait_for(lambda: learned(srv) == [0])
        time.sleep(0.5)
        assert requests(srv) == {"learned": 1} and learned(srv) == [0]
        m.logout()


def test_scanner_down_at_move_time_learns_when_it_is_back(tmp_path: Path, own_spamd: Spamd) -> None:
    with running_server(tmp_path, learner=learner(own_spamd.address), filters=FAST) as srv:
        m = login(srv)
        m.select("INBOX")
        uid = append(m, "INBOX", message("cheap watches replica"))
        assert uid_cmd(m, "MOVE", uid, "Junk") < 1.0
        wait_for(lambda: attempts(srv) >= 2)  # refused, retried, refused again
        assert requests(srv) == {"pending": 1}
        own_spamd.start()
        wait_for(lambda: requests(srv) == {"learned": 1})
        assert own_spamd.magic()["nspam"] == 1
        m.logout()


def test_a_request_survives_a_restart(
    tmp_path: Path, own_spamd: Spamd, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_server(tmp_path, learner=learner(own_spamd.address), filters=FAST) as srv:
        m = login(srv)
        m.select("INBOX")
        uid = append(m, "INBOX", message("enlarge your savings today"))
        uid_cmd(m, "MOVE", uid, "Junk")
        wait_for(lambda: attempts(srv) >= 1)
        m.select("Junk")
        m.uid("STORE", "1:*", "+FLAGS", "(\\Deleted)")
        m.expunge()  # the message is gone from the store: the queue kept its copy
        m.logout()
    own_spamd.start()
    monkeypatch.setattr(RunningServer, "add_user", lambda self, *args: None)
    with running_server(tmp_path, learner=learner(own_spamd.address), filters=FAST) as srv:
        wait_for(lambda: requests(srv) == {"learned": 1})
        assert own_spamd.magic()["nspam"] == 1


def test_a_scanner_that_never_answers_delays_neither_the_move_nor_the_stop(
    tmp_path: Path,
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does) and never answers
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    settings = FilterSettings(learning=LearningSettings(timeout=60))
    try:
        with running_server(tmp_path, learner=learner(address, 60), filters=settings) as srv:
            m = login(srv)
            m.select("INBOX")
            times = []
            for n in range(3):
                uid = append(m, "INBOX", message(f"spam number {n}"))
                times.append(uid_cmd(m, "MOVE", uid, "Junk"))
            # Far below the scanner's 60-s time-out: the move did not wait for it.
            assert max(times) < 10, times
            assert requests(srv) == {"pending": 3}
            m.logout()
            stopping = time.monotonic()
        # The unanswered request was cancelled, not waited for (60 s).
        assert time.monotonic() - stopping < 10
        assert requests(srv) == {"pending": 3} and attempts(srv) == 1
    finally:
        silent.close()


def test_the_spam_checks_scanner_is_taught_without_further_wiring(
    tmp_path: Path,
    spamd: Spamd,  # noqa: F811
) -> None:
    """With the spam check in the chain, its ``[filters.check.spam]`` scanner is the one the
    learning teaches."""
    filters = FilterSettings(
        chain=("spam",),
        options={"spam": {"address": spamd.address}},
        learning=FAST.learning,
    )
    with running_server(tmp_path, filters=filters) as srv:
        assert srv.server.learning is not None
        m = login(srv)
        m.select("INBOX")
        uid = append(m, "INBOX", message("discount pharmacy online"))
        before = spamd.magic()
        uid_cmd(m, "MOVE", uid, "Junk")
        wait_for(lambda: spamd.magic()["nspam"] == before["nspam"] + 1)
        m.logout()


def test_no_spam_check_no_learning(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        assert srv.server.learning is None
