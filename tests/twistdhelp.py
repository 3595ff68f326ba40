"""``twistd -n ourmail`` as a child process, the way an admin runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "web", "http")


class Twistd:
    """A ``twistd -n ourmail`` child process and what it logged."""

    def __init__(
        self,
        data: Path,
        extra: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
        starting: Callable[[subprocess.Popen[bytes]], None] | None = None,
    ) -> None:
        """``prefix``: a command that runs twistd (e.g. ``setpriv ...`` to change its user);
        ``starting``: called with the process as soon as it is spawned, before it is ready."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        from conftest import dns_zone

        args = (
            [
                *prefix,
                str(Path(sys.executable).with_name("twistd")),
                "-n",
                "--pidfile=",
                "ourmail",
                "--data",
                str(data),
                "--domain",
                "example.test",
                "--hostname",
                "mail.example.test",
            ]
            + [f"--listen={s}=tcp:0:interface=127.0.0.1" for s in SERVICES]
            # Lookups (the filter chain's, the queue's) only on loopback, never off this machine.
            + [f"--dns=127.0.0.1:{dns_zone()[1]}"]
            + list(extra)
        )
        self.proc = subprocess.Popen(
            args, cwd=data.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.log: list[str] = []
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if starting is not None:
            starting(self.proc)
        if not self._ready.wait(60) or len(self.ports) < len(SERVICES):  # or it ended
            self.stop()
            raise AssertionError(
                f"twistd did not start (exit status {self.proc.returncode}):\n"
                + "\n".join(self.log)
            )

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.log.append(line)
            m = re.search(r"(\w+) listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.ports[m.group(1)] = int(m.group(2))
                if len(self.ports) == len(SERVICES):
                    self._ready.set()
        self._ready.set()  # the process ended

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)

    def kill(self) -> None:
        """kill -9: no shutdown code runs, as in a power cut of the process."""
        self.proc.kill()
        self.proc.wait(30)


class OtherProcess:
    """A second server process (``twistd ourmail``) on the same data folder, as a session
    factory like :class:`RunningServer`: same user, its own ports."""

    def __init__(self, srv: Any) -> None:
        self.user, self.password = srv.user, srv.password
        self.twistd = Twistd(srv.data)

    def port(self, service: str) -> int:
        return self.twistd.ports[service]
