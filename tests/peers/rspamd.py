"""A private rspamd (Debian's) on loopback ports, offline, with a minimal local config.

Started once per test session: ``rspamd_peer()``.  Its own ``rspamd.conf`` takes Debian's
rules (``/etc/rspamd/common.conf``) but its own workers: the normal worker and the
controller on free loopback ports, the controller with a password and no trusted address
(rspamd lets ``secure_ip`` addresses, loopback by default, learn without one).  Bayes keeps
its statistics in SQLite files in the private folder (Debian's default backend is Redis;
rspamd 3.4 still has the ``sqlite3`` backend, so no Redis is needed).  DNS goes to a port
the tests' DNS server (``conftest.dns_zone``): names not set there are NXDOMAIN, so the
network rules (RBLs, SURBL, SPF) find nothing, as for a clean sender, instead of failing.

The first start on a machine compiles Hyperscan databases (about 40 s on 2 busy cores);
they are kept in ``<tmp>/ourmail-rspamd-hs`` so later sessions start in about 2 s.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

PASSWORD = "rspamd test secret"

CONFIG = """\
.include "$CONFDIR/common.conf"
options {{
    pidfile = "{work}/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "{work}/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
worker "controller" {{
    type = "controller";
    bind_socket = "127.0.0.1:{controller}";
    count = 1;
    password = "{password}";
    enable_password = "{password}";
    secure_ip = "192.0.2.1";
    static_dir = "${{WWWDIR}}";
}}
"""

OPTIONS = """\
hs_cache_dir = "{cache}/";
dns {{ nameserver = ["127.0.0.1:{dns}"]; timeout = 0.2s; retransmits = 1; }}
"""

BAYES = """\
backend = "sqlite3";
min_learns = 1;
min_tokens = 5;
cache {{ type = "sqlite3"; file = "{work}/learn_cache.sqlite"; }}
statfile {{ symbol = "BAYES_HAM"; spam = false; path = "{work}/bayes.ham.sqlite"; }}
statfile {{ symbol = "BAYES_SPAM"; spam = true; path = "{work}/bayes.spam.sqlite"; }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rspamd:
    """A running rspamd: ``url`` (normal worker), ``controller`` (its URL), ``learned()``."""

    def __init__(self, work: Path, port: int, controller: int) -> None:
        self.work = work
        self.url = f"http://127.0.0.1:{port}"
        self.controller = f"http://127.0.0.1:{controller}"
        self.log = work / "rspamd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> None:
        self.proc = subprocess.Popen(
            [
                "rspamd",
                "--no-fork",
                "--user=nobody",
                "--group=nogroup",
                f"--config={self.work}/rspamd.conf",
                f"--var=LOCAL_CONFDIR={self.work}",
                f"--var=DBDIR={self.work}/db",
                f"--var=RUNDIR={self.work}",
                f"--var=LOGDIR={self.work}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rspamd exited with {self.proc.returncode}; see {self.log}")
            if self._pong():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rspamd did not answer /ping within {timeout} s; see {self.log}")

    def _pong(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:
                ping = r.read().strip() == b"pong"
            with urllib.request.urlopen(self.controller + "/ping", timeout=2) as r:
                return ping and r.read().strip() == b"pong"
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def _stat(self) -> dict[str, object]:
        request = urllib.request.Request(self.controller + "/stat", headers={"Password": PASSWORD})
        with urllib.request.urlopen(request, timeout=5) as r:
            stat: dict[str, object] = json.load(r)
        return stat

    def classifier_ready(self) -> bool:
        """Whether the controller has both Bayes statfiles (spam and ham) open."""
        statfiles = self._stat().get("statfiles", [])
        assert isinstance(statfiles, list)
        return {f.get("symbol") for f in statfiles} == {"BAYES_SPAM", "BAYES_HAM"}

    def learned(self) -> dict[str, int]:
        """Messages learned per class (the controller's ``/stat``: each statfile's
        ``revision`` counts the messages learned into it)."""
        counts = {"spam": 0, "ham": 0}
        statfiles = self._stat().get("statfiles", [])
        assert isinstance(statfiles, list)
        for statfile in statfiles:
            kind = "spam" if statfile["symbol"] == "BAYES_SPAM" else "ham"
            counts[kind] += int(statfile.get("revision", 0))
        return counts


_running: Rspamd | None = None


def rspamd_peer() -> Rspamd:
    """The session's rspamd (started on first use, stopped at exit).  A missing rspamd is a
    failure that says how to install it, never a skip."""
    global _running
    if _running is None:
        if shutil.which("rspamd") is None:
            raise RuntimeError("rspamd is not installed: apt-get install rspamd")
        nobody = pwd.getpwnam("nobody")
        work = Path(tempfile.mkdtemp(prefix="ourmail-rspamd-"))
        cache = Path(tempfile.gettempdir()) / "ourmail-rspamd-hs"
        for folder in (work, work / "db", work / "local.d", cache):
            folder.mkdir(exist_ok=True)
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        port, controller = free_port(), free_port()
        config = CONFIG.format(work=work, port=port, controller=controller, password=PASSWORD)
        (work / "rspamd.conf").write_text(config)
        from conftest import dns_zone

        (work / "local.d" / "options.inc").write_text(
            OPTIONS.format(cache=cache, dns=dns_zone()[1])
        )
        (work / "local.d" / "classifier-bayes.conf").write_text(BAYES.format(work=work))
        server = Rspamd(work, port, controller)
        server.start()
        if not server.classifier_ready():
            # Both workers create the SQLite statistics files at their first start, and one
            # may find them locked by the other (then it has no backend for that class):
            # once they exist, a restart opens them cleanly.
            server.stop()
            server.start()
            if not server.classifier_ready():
                server.stop()
                raise RuntimeError(f"rspamd's Bayes classifier did not start; see {server.log}")
        _running = server

        def cleanup() -> None:
            server.stop()
            shutil.rmtree(work, ignore_errors=True)

        atexit.register(cleanup)
    return _running


@pytest.fixture
def rspamd() -> Rspamd:
    """The session's rspamd (see :func:`rspamd_peer`)."""
    return rspamd_peer()
