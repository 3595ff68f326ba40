"""``<data>/listening.json``: the TCP ports the running server's listeners listen on, for the
commands that print them (``ourmail dns records`` and ``check``, docs/dns.md).

The server writes it once its listeners listen and removes it when it stops; it holds the
server's process id, so a file left by a crash (a process that no longer exists) is ignored::

    {"pid": 4242, "ports": {"smtp": 25, "imaps": 993, "web": 443}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from twisted.application.service import Service

from ourmail.fsutil import write_atomic

FILE_NAME = "listening.json"


def ports_file(data_dir: Path) -> Path:
    """Where the running server's ports are written."""
    return data_dir / FILE_NAME


class PortsFile(Service):
    """Writes ``ports()`` (listener -> TCP port) at start, after the listeners (so add it to
    the service tree after them); removes the file at stop."""

    name = "ports-file"

    def __init__(self, data_dir: Path, ports: Callable[[], Mapping[str, int]]) -> None:
        self.path = ports_file(data_dir)
        self.ports = ports

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        content = {"pid": os.getpid(), "ports": dict(sorted(self.ports().items()))}
        write_atomic(self.path, json.dumps(content).encode("ascii"), 0o644)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    return True


def running_ports(data_dir: Path) -> dict[str, int] | None:
    """The ports the server running on ``data_dir`` listens on, or None when none runs (no
    file, an unreadable one, or one left by a process that has ended)."""
    try:
        content = json.loads(ports_file(data_dir).read_text())
        pid, ports = int(content["pid"]), content["ports"]
        found = {str(name): int(port) for name, port in ports.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return found if _alive(pid) else None
