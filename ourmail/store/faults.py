"""Crash points for the durability tests.

``OURMAIL_CRASH_AT=name:n`` in the environment makes the process kill itself with SIGKILL the
n-th time it passes ``point("name")`` (n defaults to 1).  Unset, a point costs one comparison.
The points sit between the steps of every store operation that changes files, so the tests can
show that a crash at any of them loses nothing acknowledged and duplicates nothing.
"""

from __future__ import annotations

import os
import signal

_target, _, _count = os.environ.get("OURMAIL_CRASH_AT", "").partition(":")
_left = int(_count or 1)


def point(name: str) -> None:
    global _left
    if name == _target:
        _left -= 1
        if _left <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
