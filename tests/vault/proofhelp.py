"""Vaults written record by record as docs/vault-format.md says (blob then capture), for the
proof tests and bench/vault_export.py: no server, no committer."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from pathlib import Path

from ourmail.vault.segments import SegmentLog

#: When the first sample message arrives.
EPOCH = 1_780_000_000.0


def split(message: bytes) -> tuple[bytes, bytes]:
    """The header section (up to and including the empty line) and the body."""
    for mark in (b"\r\n\r\n", b"\n\n"):
        at = message.find(mark)
        if at >= 0:
            return message[: at + len(mark)], message[at + len(mark) :]
    return message, b""


def sample_message(n: int, size: int = 600) -> bytes:
    """Message ``n``: a plain text mail of about ``size`` octets, with a ``From `` line in its
    body (mbox quoting) and a body shared with message ``n - 3`` every fourth message."""
    rng = random.Random(n - 3 if n % 4 == 0 else n)
    words = [
        rng.choice(["minutes", "budget", "council", "road", "school", "water"]) for _ in range(8)
    ]
    line = (" ".join(words) + "\r\n").encode()
    body = b"From the clerk:\r\n>From a quoted line\r\n" + line * max(1, (size - 300) // len(line))
    head = (
        f"From: clerk{n % 7}@town.example\r\nTo: council@town.example\r\n"
        f"Subject: Minutes {n}\r\nMessage-ID: <m{n}@town.example>\r\n"
        "Date: Tue, 01 Dec 2026 06:00:00 +0000\r\n\r\n"
    ).encode()
    return head + body


def capture(log: SegmentLog, messages: Iterable[bytes], stored: set[str] | None = None) -> int:
    """Append each message as a blob (when its body is new) and a capture record, one append
    per message; the last seq is returned."""
    stored = set() if stored is None else stored
    seq = 0
    with log.locked():
        for n, message in enumerate(messages, 1):
            header, body = split(message)
            body_sha = hashlib.sha256(body).hexdigest()
            items: list[tuple[str, dict[str, object], bytes | None]] = []
            if body_sha not in stored:
                items.append(("blob", {}, body))
                stored.add(body_sha)
            envelope = {
                "via": "smtp",
                "id": f"T{n}",
                "sender": f"clerk{n % 7}@town.example",
                "recipients": ["council@town.example"],
                "mailboxes": ["council@town.example"],
                "client": "192.0.2.7",
                "user": "",
                "arrival": EPOCH + n,
            }
            fields = {
                "body": body_sha,
                "message_sha256": hashlib.sha256(message).hexdigest(),
                "size": len(message),
                "envelope": envelope,
            }
            items.append(("capture", fields, header))
            seq = log.append(items, EPOCH + n)[-1][1].seq
    return seq


def build(root: Path, count: int = 12, segment_size: int = 2500) -> SegmentLog:
    """A vault of ``count`` sample messages over several small segments."""
    log = SegmentLog(root, segment_size=segment_size)
    capture(log, (sample_message(n) for n in range(1, count + 1)))
    return log
