"""A private SpamAssassin ``spamd`` (Debian's) on a loopback port, with its own Bayes database.

Started once per test session (it takes about a second and 230 MB): ``spamd_peer()`` gives
the running one.  It learns (``--allow-tell``) into ``work/bayes`` with auto-learning off, so
``magic()`` (``sa-learn --dump magic``) counts only what the tests taught.  Bayes counts a
message once (by its To, Date and body): tests that learn vary the body.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

#: The GTUBE test string (SpamAssassin's rule GTUBE scores 1000).
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Spamd:
    """A running spamd: ``address`` (``127.0.0.1:PORT``), ``magic()``, ``stop()``."""

    def __init__(self, work: Path, port: int) -> None:
        self.work, self.port = work, port
        self.address = f"127.0.0.1:{port}"
        self.bayes = work / "bayes"
        self.log = work / "spamd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "spamd",
                "--local",  # no network tests (DNSBLs, Razor): offline and deterministic
                "--nouser-config",
                "--username=nobody",
                f"--listen=127.0.0.1:{self.port}",
                "--allowed-ips=127.0.0.1/32",
                "--allow-tell",
                "--max-children=2",
                f"--syslog={self.log}",
                f"--cf=bayes_path {self.bayes}/bayes",
                "--cf=bayes_auto_learn 0",
                "--cf=bayes_min_ham_num 1",
                "--cf=bayes_min_spam_num 1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spamd exited with {self.proc.returncode}; see {self.log}")
            if self._pong():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"spamd did not answer PING within 60 s; see {self.log}")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"PING SPAMC/1.5\r\n\r\n")
                return s.recv(100).startswith(b"SPAMD/1.5 0 PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
            self.proc = None

    def magic(self) -> dict[str, int]:
        """``nspam`` and ``nham`` of the Bayes database (``sa-learn --dump magic``)."""
        if not (self.bayes / "bayes_toks").exists():
            return {"nspam": 0, "nham": 0}  # nothing learned yet: sa-learn finds no database
        out = subprocess.run(
            ["sa-learn", "--dbpath", str(self.bayes), "--dump", "magic"],
            check=True,
            capture_output=True,
            text=True,
            user="nobody",
        ).stdout
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[-1] in ("nspam", "nham"):
                counts[parts[-1]] = int(parts[2])
        return counts


_running: Spamd | None = None


def spamd_peer() -> Spamd:
    """The session's spamd (started on first use, stopped at exit).  A missing spamd is a
    failure that says how to install it, never a skip."""
    global _running
    if _running is None:
        if shutil.which("spamd") is None or shutil.which("sa-learn") is None:
            raise RuntimeError(
                "spamd is not installed: apt-get install spamassassin spamd spamc "
                "(tests/debian-packages.txt)"
            )
        server = private_spamd()
        server.start()
        _running = server

        def cleanup() -> None:
            server.stop()
            shutil.rmtree(server.work, ignore_errors=True)

        atexit.register(cleanup)
    return _running


def private_spamd() -> Spamd:
    """A spamd of its own (not started), for a test that stops it: the caller stops it and
    removes ``work``."""
    work = Path(tempfile.mkdtemp(prefix="ourmail-spamd-"))
    (work / "bayes").mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(work / "bayes", nobody.pw_uid, nobody.pw_gid)
    os.chmod(work, 0o755)
    return Spamd(work, free_port())


@pytest.fixture
def spamd() -> Spamd:
    """The session's spamd (see :func:`spamd_peer`)."""
    return spamd_peer()
