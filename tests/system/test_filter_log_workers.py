"""The filter log with ``[smtp] mx_processes = 2``: refusals decided in the main process and
in the MX worker land in one log, which ``ourmail log filter`` reads."""

from __future__ import annotations

import re
import signal
import smtplib
from pathlib import Path

import pytest
from queuehelp import wait_for
from twistdhelp import Twistd

from ourmail.admin import cli
from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password
from ourmail.filters.filterlog import LogDB

pytestmark = pytest.mark.system

USER = "alice@example.test"
CONFIG = """domains = ["example.test"]
[smtp]
mx_processes = 2
[filters]
chain = ["greylist"]
[filters.check.greylist]
delay = 600
skip_networks = []
"""
NETWORKS = 16


def rcpt(port: int, source: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0)) as s:
        s.ehlo("client.test")
        s.mail("bob@else.test")
        return s.rcpt(USER)[0]


def test_both_processes_write_one_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
        db = LogDB(data / "filters" / "log.sqlite")
        wait_for(lambda: len(db.entries(recipient=USER)) == NETWORKS, 10)
        # The kernel spreads connections over both processes (all in one: 1 run in 65,536).
        greylisted = re.compile(r"greylist: 127\.0\.\d+\.0/24 .*greylisted")
        writers = {"mx worker 1:" in line for line in server.log if greylisted.search(line)}
        assert writers == {True, False}
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(30)
    events = db.entries(recipient=USER)
    assert sorted(e.client_address for e in events) == sorted(sources)
    assert {(e.action, e.stage, e.check) for e in events} == {("tempfail", "rcpt", "greylist")}
    assert cli.main(["log", "filter", USER, "--since", "1h", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.count("deferred  at rcpt  by greylist  from <bob@else.test>") == NETWORKS
    assert out.endswith(f"{NETWORKS} entries for {USER}\n")
