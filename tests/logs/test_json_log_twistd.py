"""``[log] format = "json"`` under a real ``twistd -n ourmail``: JSON lines on standard output,
or in ``--logfile``, which ``kill -USR1`` rotates (docs/logging.md)."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import dns_zone
from loghelp import imap_login
from twistdhelp import REPO, SERVICES, Twistd

pytestmark = pytest.mark.system

MSG = b"From: bob@else.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


class Ports:
    """What :func:`imap_login` needs of a server: its ports, by service."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports

    def port(self, service: str) -> int:
        return self.ports[service]


def json_data(tmp_path: Path) -> Path:
    data = tmp_path / "ourmail-data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text('[log]\nformat = "json"\n')
    return data


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as JSON (each must be)."""
    return [json.loads(line) for line in lines if line.strip()]


def exercise(ports: dict[str, int]) -> None:
    """A failed login and one message."""
    assert imap_login(Ports(ports), "alice@example.test", "wrong", "127.0.0.1")
    with smtplib.SMTP("127.0.0.1", ports["smtp"]) as s:
        s.sendmail("bob@else.test", ["postmaster@example.test"], MSG)


def check(events: list[dict[str, Any]]) -> None:
    (login,) = [e for e in events if e.get("event") == "login"]
    assert (login["service"], login["result"]) == ("imap", "unknown-user")
    assert login["log_text"].startswith("login failed: client=127.0.0.1 service=imap ")
    (txn,) = [e for e in events if e.get("event") == "smtp.transaction"]
    assert txn["result"] == "accepted" and txn["rcpt_count"] == 1


def test_json_lines_on_standard_output(tmp_path: Path) -> None:
    server = Twistd(json_data(tmp_path))
    try:
        exercise(server.ports)
        deadline = time.monotonic() + 30
        while not any('"smtp.transaction"' in li for li in server.log):
            assert time.monotonic() < deadline, server.log
            time.sleep(0.1)
    finally:
        server.stop()
    check(parsed(server.log))


def test_json_lines_in_the_logfile_rotated_by_sigusr1(tmp_path: Path) -> None:
    data, logfile = json_data(tmp_path), tmp_path / "ourmail.log"
    args = [
        str(Path(sys.executable).with_name("twistd")),
        "-n",
        "--pidfile=",
        f"--logfile={logfile}",
        "ourmail",
        "--data",
        str(data),
        "--domain",
        "example.test",
        "--hostname",
        "mail.example.test",
        f"--dns=127.0.0.1:{dns_zone()[1]}",
        *[f"--listen={s}=tcp:0:interface=127.0.0.1" for s in SERVICES],
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE)
    try:
        ports: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while len(ports) < len(SERVICES):
            assert time.monotonic() < deadline and proc.poll() is None
            text = logfile.read_text() if logfile.exists() else ""
            ports = {
                m[0]: int(m[1])
                for m in re.findall(r'"log_text": "(\w+) listening on 127\.0\.0\.1:(\d+)"', text)
            }
            time.sleep(0.1)
        proc.send_signal(signal.SIGUSR1)
        while not (tmp_path / "ourmail.log.1").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        exercise(ports)
        while '"smtp.transaction"' not in logfile.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert out == b""  # nothing on standard output: all of it went to the file
    before = parsed((tmp_path / "ourmail.log.1").read_text().splitlines())
    assert any("listening on" in e["log_text"] for e in before)
    check(parsed(logfile.read_text().splitlines()))


def test_mx_workers_events_keep_their_fields(tmp_path: Path) -> None:
    """An MX worker process's transactions reach the master's JSON log as events, once each,
    with a ``worker`` field."""
    data = json_data(tmp_path)
    (data / "ourmail.toml").write_text('[log]\nformat = "json"\n[smtp]\nmx_processes = 2\n')
    server = Twistd(data)

    def send(first: int) -> None:
        for n in range(first, first + 10):
            with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
                msg = f"Message-ID: <w{n}@else.test>\r\nSubject: {n}\r\n\r\nx\r\n"
                s.sendmail("bob@else.test", ["postmaster@example.test"], msg.encode())

    try:
        deadline = time.monotonic() + 30
        while not any("mx worker 1: accepting mail" in li for li in server.log):
            assert time.monotonic() < deadline, server.log
            time.sleep(0.1)
        threads = [threading.Thread(target=send, args=(i * 10,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while sum('"smtp.transaction"' in li for li in server.log) < 40:
            assert time.monotonic() < deadline + 30, server.log
            time.sleep(0.1)
    finally:
        server.stop()
    txns = [e for e in parsed(server.log) if e.get("event") == "smtp.transaction"]
    ids = sorted(e["message_id"] for e in txns)
    assert ids == sorted(f"<w{n}@else.test>" for n in range(40))
    by_worker = [e for e in txns if e.get("worker") == 1]
    assert by_worker, "the worker took no connection"
    assert all(
        e["log_text"].startswith("mx worker 1: smtp transaction accepted:") for e in by_worker
    )


def test_the_twistd_option_and_a_wrong_value(tmp_path: Path) -> None:
    data = tmp_path / "ourmail-data"
    server = Twistd(data, ("--log-format=json",))
    server.stop()
    assert any("listening on" in e["log_text"] for e in parsed(server.log))
    wrong = subprocess.run(
        [str(Path(sys.executable).with_name("twistd")), "-n", "ourmail", "--log-format=xml"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert wrong.returncode != 0 and "--log-format is text or json" in wrong.stderr + wrong.stdout
