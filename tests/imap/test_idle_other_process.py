"""IDLE hears of changes made outside this process's folder objects (another server process,
an MX worker, a local delivery agent) within about a second (issue 5, point 3)."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import RunningServer
from imaphelp import Session
from twistdhelp import REPO

DELIVER = """
import sys
from twisted.internet import reactor
from ourmail.store.userstore import MaildirStore
store = MaildirStore(__import__("pathlib").Path(sys.argv[1]))
def go():
    d = store.user(sys.argv[2]).deliver(b"Subject: from elsewhere\\r\\n\\r\\nx\\r\\n")
    d.addBoth(lambda _: reactor.stop())
reactor.callWhenRunning(go)
reactor.run()
"""


def test_idle_sees_a_delivery_by_another_process(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("SELECT INBOX")
    s.raw.send(b"i IDLE\r\n")
    assert s.raw.line() == b"+ idling"
    subprocess.run(
        [sys.executable, "-c", DELIVER, str(mailserver.data), mailserver.user],
        check=True,
        env={"PYTHONPATH": str(REPO)},
        timeout=60,
    )
    delivered = time.monotonic()
    assert s.raw.line() == b"* 1 EXISTS"
    assert time.monotonic() - delivered < 2.5  # polled every second
    s.raw.send(b"DONE\r\n")
    assert s.raw.until(b"i ")[-1] == b"i OK IDLE terminated"
    s.close()
