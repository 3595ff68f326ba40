"""The lists' secret, ``<data>/lists/secret``: 32 random octets made on first start (mode
0600), the HMAC key of one-click unsubscribe links (``lists/tokens.py``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ourmail.fsutil import fsync_dir

SIZE = 32


def load_secret(path: Path) -> bytes:
    """The secret at ``path``, made first if there is none; ValueError if it is too short.
    Made under a temporary name and linked into place, so that two processes starting at
    once agree on one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # made by another process meanwhile: theirs holds
        finally:
            tmp.unlink()
        fsync_dir(path.parent)
    key = path.read_bytes()
    if len(key) < SIZE:
        raise ValueError(f"{path} holds fewer than {SIZE} octets")
    return key
