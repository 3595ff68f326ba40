"""Driving the store from tests: folder state is reactor-owned, so calls run on the reactor."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from conftest import _ensure_reactor
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

T = TypeVar("T")


def on_reactor(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on the reactor thread (waiting for a Deferred result)."""
    _ensure_reactor()
    return blockingCallFromThread(reactor, fn, *args)


_n = 0


def drop(folder_path: Path, data: bytes, sub: str = "new", name: str | None = None) -> str:
    """Deliver as another agent would: a file straight into new/ (or cur/); returns its name."""
    global _n
    _n += 1
    name = name or f"{int(time.time())}.X{os.getpid()}_{_n}.otherhost"
    (folder_path / sub / name).write_bytes(data)
    return name
