"""Greylisting with ``[smtp] mx_processes = 2``: a first attempt seen by one process and the
retry seen by the other are one triplet (the state is one SQLite file for all processes)."""

from __future__ import annotations

import re
import signal
import smtplib
import time
from pathlib import Path

import pytest
from queuehelp import wait_for
from twistdhelp import Twistd

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password

pytestmark = pytest.mark.system

USER = "alice@example.test"
CONFIG = """domains = ["example.test"]
[smtp]
mx_processes = 2
[filters]
chain = ["greylist"]
[filters.check.greylist]
delay = 1
skip_networks = []
"""
NETWORKS = 16


def rcpt(port: int, source: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0)) as s:
        s.ehlo("client.test")
        s.mail("bob@else.test")
        return s.rcpt(USER)[0]


def process_of(log: list[str], network: str, why: str) -> set[bool]:
    """For each log line of ``network`` with ``why``: whether the MX worker wrote it."""
    pattern = re.compile(rf"greylist: {re.escape(network)} .*{why}")
    return {"mx worker 1:" in line for line in log if pattern.search(line)}


def test_a_retry_in_the_other_process_passes(tmp_path: Path) -> None:
    data = tmp_path / "ourmail-data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text(CONFIG)
    AccountDB(data).add_user(USER, hash_password("x" * 12))
    server = Twistd(data)
    try:
        wait_for(lambda: any("mx worker 1: accepting mail" in line for line in server.log), 30)
        port = server.ports["smtp"]
        sources = [f"127.0.{n}.1" for n in range(1, NETWORKS + 1)]
        assert [rcpt(port, s) for s in sources] == [450] * NETWORKS
        time.sleep(1.1)
        assert [rcpt(port, s) for s in sources] == [250] * NETWORKS
        networks = [f"127.0.{n}.0/24" for n in range(1, NETWORKS + 1)]
        wait_for(lambda: all(process_of(server.log, n, "allowed") for n in networks), 10)
        # The kernel spreads connections over both processes: some networks had their first
        # attempt in one and their retry in the other (all in one: about 1 run in 65,536).
        crossed = [
            n
            for n in networks
            if process_of(server.log, n, r"greylisted \(new\)")
            != process_of(server.log, n, "allowed")
        ]
        assert crossed
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(30)
