"""A server started again after an unclean stop (SIGKILL at the end of the stop timeout, the
OOM killer, a power cut) finds the ``lmtp.sock`` and ``lmtp.sock.lock`` the killed one left.
Twisted's lock takes any live pid for a live owner, and that pid is often alive again: a
restarted container's twistd is PID 1 once more, and after a reboot another service may have
it.  The socket decides instead (docs/deploy.md#container); a server that is really running
keeps it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from twistdhelp import REPO, Twistd

pytestmark = pytest.mark.system


def _killed(data: Path) -> tuple[Path, Path]:
    """A data folder whose server was killed with SIGKILL: its socket and lock."""
    Twistd(data).kill()
    sock, lock = data / "lmtp.sock", data / "lmtp.sock.lock"
    assert sock.exists() and lock.is_symlink()
    return sock, lock


def _greets(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(sock))
        return client.recv(512).startswith(b"220 ")  # RFC 2033 §4: the LMTP greeting


@pytest.mark.parametrize("owner", ["itself", "another process", "nobody (deleted)"])
def test_a_restart_takes_over_the_killed_servers_lmtp_socket(tmp_path: Path, owner: str) -> None:
    sock, lock = _killed(tmp_path / "data")
    other = None
    prefix: tuple[str, ...] = ()
    if owner == "itself":
        # A shell writes its own pid in the lock, then becomes twistd (exec keeps the pid),
        # as a container's PID 1 comes back.
        prefix = ("sh", "-c", f'ln -sfn "$$" "{lock}" && exec "$@"', "sh")
    elif owner == "another process":
        other = subprocess.Popen(["sleep", "120"])
        os.unlink(lock)
        os.symlink(str(other.pid), lock)
    else:  # the lock deleted by hand, the socket left: "Address already in use"
        os.unlink(lock)
    again = Twistd(tmp_path / "data", prefix=prefix)
    try:
        assert any(line.endswith(f"lmtp listening on {sock}") for line in again.log)
        assert any(
            line.endswith(f"removing {sock}, left by a server that has ended") for line in again.log
        )
        assert _greets(sock)
    finally:
        again.stop()
        if other is not None:
            other.kill()
            other.wait()


def test_a_running_server_keeps_its_lmtp_socket(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Twistd(data)
    try:
        twistd = str(Path(sys.executable).with_name("twistd"))
        second = subprocess.run(
            [twistd, "-n", "--pidfile=", "ourmail", "--data", str(data),
             "--listen=smtp=none", "--listen=submission=none", "--listen=submissions=none",
             "--listen=imap=none", "--listen=imaps=none", "--listen=pop3=none",
             "--listen=pop3s=none", "--listen=web=none", "--listen=http=none"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert second.returncode != 0
        assert "lmtp cannot listen on" in second.stdout + second.stderr
        assert _greets(data / "lmtp.sock")  # the first server's, still there
    finally:
        first.stop()
