"""``[smtp] mx_processes = 2``: a worker process shares the MX port and the store."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from conftest import running_server
from queuehelp import wait_for
from rawclient import RawClient
from twistdhelp import Twistd

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password
from ourmail.config import load_settings
from ourmail.service import first_start
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
                    and "ourmail.mxworker" in Path(f"/proc/{entry}/cmdline").read_text()
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


LIMIT = 8


def greeted(server: Twistd, source: str, worker: bool) -> int:
    """Sessions from ``source`` that the worker (or the master) logged."""
    lines = [line for line in server.log if f"ESMTP connection from {source}" in line]
    return sum(("mx worker 1:" in line) == worker for line in lines)


def test_connection_limits_count_across_processes(tmp_path: Path) -> None:
    """A client spreading connections over the master and a worker meets one per-address
    limit; a worker killed with its sessions open gives them back."""
    data = tmp_path / "ourmail-data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text(
        f'domains = ["example.test"]\n[smtp]\nmx_processes = 2\n'
        f"[limits]\nmax_connections_per_ip = {LIMIT}\n"
    )
    server = Twistd(data)
    try:
        wait_for(lambda: any("mx worker 1: accepting mail" in line for line in server.log), 30)
        port = server.ports["smtp"]
        # One client address per attempt, until the worker holds some of the sessions (in
        # about 1 attempt of 256 the master accepts all of them).
        for n in range(1, 6):
            source = f"127.0.0.{n}"
            held = [RawClient(port, source=source) for _ in range(LIMIT)]
            assert all(c.line().startswith(b"220 ") for c in held)
            wait_for(  # the worker's log lines come through a pipe
                lambda s=source: greeted(server, s, True) + greeted(server, s, False) == LIMIT
            )
            in_worker = greeted(server, source, True)
            if in_worker:
                break
        assert in_worker > 0

        def refused(worker: bool) -> bool:
            lines = [line for line in server.log if f"{source} refused: too many" in line]
            return any(("mx worker 1:" in line) == worker for line in lines)

        for _ in range(300):  # until both processes have refused some (the kernel picks)
            extra = RawClient(port, source=source)
            assert extra.line() == (
                b"421 4.7.0 mail.example.test too many connections from your address, "
                b"try again later"
            )
            assert extra.closed()
            if refused(True) and refused(False):
                break
        wait_for(lambda: refused(True) and refused(False))  # the worker's lines come late

        # kill -9 the worker: the master gives its sessions back, a new worker starts.
        (worker,) = worker_pids(server.proc.pid)
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: sum("accepting mail" in line for line in server.log) == 2, 30)
        again = [RawClient(port, source=source) for _ in range(in_worker)]
        assert all(c.line().startswith(b"220 ") for c in again)
        assert RawClient(port, source=source).line().startswith(b"421 ")
        for c in held + again:
            c.close()
        # Closed sessions are given back too (the master counts them down shortly).
        wait_for(lambda: RawClient(port, source=source).line().startswith(b"220 "), 10)
    finally:
        server.stop()


def test_sigterm_stops_the_workers_and_keeps_what_was_acknowledged(tmp_path: Path) -> None:
    """SIGTERM in the middle of a burst stops master and worker, and every message that got
    its 250 is in the store."""
    data = tmp_path / "ourmail-data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text('domains = ["example.test"]\n[smtp]\nmx_processes = 2\n')
    AccountDB(data).add_user(USER, hash_password("x" * 12))
    server = Twistd(data)
    wait_for(lambda: any("mx worker 1: accepting mail" in line for line in server.log), 30)
    (worker,) = worker_pids(server.proc.pid)
    acknowledged: list[str] = []
    stop = threading.Event()

    def send(first: int) -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            for n in range(first, first + 1000):
                if stop.is_set():
                    return
                with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
                    msg = f"Message-ID: <t{n}@else.test>\r\nSubject: {n}\r\n\r\nx\r\n"
                    s.sendmail("bob@else.test", [USER], msg.encode())
                    acknowledged.append(f"<t{n}@else.test>")

    threads = [threading.Thread(target=send, args=(i * 1000,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acknowledged) >= 40, 60)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == -signal.SIGTERM
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not alive(worker)
    folder = MaildirStore(data).user(USER).folder("INBOX")
    folder.sync()
    stored = {message_from_bytes(folder.message(uid).read())["Message-ID"] for uid in folder.uids()}
    assert set(acknowledged) <= stored


def test_a_unix_socket_mx_listener_runs_in_one_process(tmp_path: Path) -> None:
    sock = tmp_path / "mx.sock"
    with running_server(tmp_path, listen={"smtp": f"unix:{sock}"}, mx_processes=2) as srv:
        assert worker_pids(os.getpid()) == []
        client = RawClient(unix=str(sock))
        assert client.line().startswith(b"220 ")
        client.close()
        assert "mx-workers" in [s.name for s in srv.server.service]


def test_a_worker_whose_master_died_while_it_started_stops(tmp_path: Path) -> None:
    """A worker still starting when its master was killed is already an orphan when it first
    looks (its parent pid changed before it could note it): it stops all the same."""
    data = tmp_path / "ourmail-data"
    first_start(load_settings(data=str(data), domains=("example.test",)))
    listening = socket.create_server(("127.0.0.1", 0))
    ours, theirs = socket.socketpair()

    def inherit() -> None:
        os.dup2(listening.fileno(), 3)
        os.dup2(theirs.fileno(), 4)

    gone = subprocess.Popen(["true"])  # a "master" that has already ended
    gone.wait()
    worker = subprocess.Popen(
        [sys.executable, "-m", "ourmail.mxworker", "--master", str(gone.pid), "--data",
         str(data), "--hostname", "mail.example.test", "--domain", "example.test"],
        preexec_fn=inherit, close_fds=False, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert worker.wait(60) == 0
    finally:
        worker.kill()
        listening.close()
        ours.close()
        theirs.close()
