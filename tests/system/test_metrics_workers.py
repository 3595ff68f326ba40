"""``/metrics`` of a server with ``[smtp] mx_processes = 2``: the MX worker's counts reach the
main process (its snapshot file) and are added to the main process's own."""

from __future__ import annotations

import http.client
import os
import re
import signal
import smtplib
from pathlib import Path

import pytest
from conftest import client_tls
from prometheus_client.parser import text_string_to_metric_families
from queuehelp import wait_for
from twistdhelp import Twistd

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password

pytestmark = pytest.mark.system

USER = "alice@example.test"


def figure(port: int, name: str, labels: dict[str, str]) -> float:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_tls(), timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and s.labels == labels
    )


def accepted(port: int) -> float:
    return figure(port, "ourmail_messages_accepted_total", {"service": "smtp"})


def worker_pid(log: list[str]) -> int | None:
    found = [re.search(r"mx worker 1: accepting mail on the MX port \(pid (\d+)\)", x) for x in log]
    pids = [int(m.group(1)) for m in found if m]
    return pids[-1] if pids else None


def test_the_mx_workers_mail_is_counted(tmp_path: Path) -> None:
    data = tmp_path / "ourmail-data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text('domains = ["example.test"]\n[smtp]\nmx_processes = 2\n')
    AccountDB(data).add_user(USER, hash_password("x" * 12))
    server = Twistd(data)
    try:
        wait_for(lambda: any("mx worker 1: accepting mail" in line for line in server.log), 30)
        for n in range(40):
            with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
                s.sendmail("bob@else.test", [USER], f"Subject: {n}\r\n\r\nx\r\n".encode())
        # Both processes took mail (the kernel spreads the connections) ...
        assert any("mx worker 1: ESMTP connection from" in line for line in server.log)
        # ... and within a snapshot interval /metrics counts all of it.
        wait_for(lambda: accepted(server.ports["web"]) == 40, 30)
        assert (data / "metrics" / "mx-1.prom").exists()
    finally:
        server.stop()


def test_a_crashed_worker_started_again_is_counted(tmp_path: Path) -> None:
    # OurmailWorkerRestarting: without the counter a worker crashing at every start would
    # be restarted every second for ever, unseen by Prometheus.
    data = tmp_path / "ourmail-data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text('domains = ["example.test"]\n[smtp]\nmx_processes = 2\n')
    server = Twistd(data)
    try:
        wait_for(lambda: worker_pid(server.log) is not None, 30)
        web, name = server.ports["web"], "ourmail_mx_worker_restarts_total"
        assert figure(web, name, {}) == 0
        first = worker_pid(server.log)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: worker_pid(server.log) not in (None, first), 30)
        assert figure(web, name, {}) == 1
    finally:
        server.stop()
