"""``[smtp] mx_processes = 2``: a worker process shares the MX port and the store."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import threading
import time
from pathlib import Path

import pytest
from queuehelp import wait_for
from twistdhelp import Twistd

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password
from ourmail.store.userstore import MaildirStore

pytestmark = pytest.mark.system

USER = "alice@example.test"


def worker_pids(master: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if (
                    int(stat[1]) == master
                    and "ourmail.smtp.workers" in Path(f"/proc/{entry}/cmdline").read_text()
                ):
                    pids.append(int(entry))
    return pids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_two_processes_share_the_mx_port_and_the_store(tmp_path: Path) -> None:
    data = tmp_path / "ourmail-data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text('domains = ["example.test"]\n[smtp]\nmx_processes = 2\n')
    AccountDB(data).add_user(USER, hash_password("x" * 12))
    server = Twistd(data)
    try:
        wait_for(lambda: any("mx worker 1: accepting mail" in line for line in server.log), 30)
        (worker,) = worker_pids(server.proc.pid)

        def send(first: int) -> None:
            for n in range(first, first + 50):
                with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
                    msg = f"Message-ID: <w{n}@else.test>\r\nSubject: {n}\r\n\r\nx\r\n"
                    s.sendmail("bob@else.test", [USER], msg.encode())

        threads = [threading.Thread(target=send, args=(i * 50,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Both processes took connections, and every message is in the store, once.
        assert any("mx worker 1: ESMTP connection from" in line for line in server.log)
        folder = MaildirStore(data).user(USER).folder("INBOX")
        folder.sync()
        assert len(folder.uids()) == 200
        assert len(set(folder.uids())) == 200
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
    # A worker whose master died (kill -9) stops by itself.
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)
