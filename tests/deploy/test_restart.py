"""A container restarted (not re-created) after an unclean stop (SIGKILL at the end of the stop
timeout, the OOM killer, a power cut): its twistd is PID 1 again, the very pid written in the
``lmtp.sock.lock`` the killed one left in the volume.  Twisted's lock takes a live pid for a
live owner, so without care that start fails on every restart (docs/deploy.md#container)."""

from __future__ import annotations

import socket
from pathlib import Path

from twistdhelp import Twistd


def test_a_restart_with_the_pid_of_the_killed_server_takes_its_lmtp_socket(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first = Twistd(data)
    first.kill()
    sock, lock = data / "lmtp.sock", data / "lmtp.sock.lock"
    assert sock.exists() and lock.is_symlink()  # what the kill left
    # The next server gets the pid the lock names: a shell that writes its own pid there and
    # then becomes twistd (exec keeps the pid), as PID 1 is reused in a container.
    again = Twistd(data, prefix=("sh", "-c", f'ln -sfn "$$" "{lock}" && exec "$@"', "sh"))
    try:
        assert any("lmtp listening on" in line and str(sock) in line for line in again.log)
        assert any("removing" in line and str(lock) in line for line in again.log)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(sock))
            assert client.recv(512).startswith(b"220 ")  # RFC 2033 §4: the LMTP greeting
    finally:
        again.stop()
