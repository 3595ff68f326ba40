"""Vaults written record by record as docs/vault-format.md says (blob then capture), for the
proof tests and bench/vault_export.py: no server, no committer."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from pathlib import Path

from ourmail.vault import records
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


def capture(log: SegmentLog, messages: Iterable[bytes], batch: int = 1) -> int:
    """Append each message as a blob (when its body is new) and a capture record, ``batch``
    messages an append (as a group commit does); the last seq is returned."""
    stored: set[str] = set()
    seq = 0
    items: list[tuple[str, dict[str, object], bytes | None]] = []
    with log.locked():
        for n, message in enumerate(messages, 1):
            header, body = split(message)
            body_sha = hashlib.sha256(body).hexdigest()
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
            if n % batch == 0:
                seq = log.append(items, EPOCH + n)[-1][1].seq
                items = []
        if items:
            seq = log.append(items, EPOCH + n)[-1][1].seq
    return seq


def build(root: Path, count: int = 12, segment_size: int = 2500) -> SegmentLog:
    """A vault of ``count`` sample messages over several small segments."""
    log = SegmentLog(root, segment_size=segment_size)
    capture(log, (sample_message(n) for n in range(1, count + 1)))
    return log


def frames(log: SegmentLog, segment: int) -> dict[int, tuple[int, int]]:
    """seq -> (start, end) of each frame in ``segment``."""
    data = log.path_of(segment).read_bytes()
    offset, found = records.parse_segment_header(data).length, {}
    while offset < len(data):
        record, end = records.parse_frame(data, offset)
        found[record.seq] = (offset, end)
        offset = end
    return found


def where(log: SegmentLog, seq: int) -> tuple[int, int, int]:
    """The segment, the frame's start and its end of record ``seq``."""
    for segment, _ in log.segments():
        if seq in (spans := frames(log, segment)):
            return segment, *spans[seq]
    raise LookupError(seq)


def remove_content(log: SegmentLog, seq: int) -> None:
    """What expiry does to a record: its content goes, its meta and hash stay."""
    segment, start, end = where(log, seq)
    data = log.path_of(segment).read_bytes()
    record, _ = records.parse_frame(data, start)
    emptied = records.Record(record.hash, record.meta, b"")
    log.path_of(segment).write_bytes(data[:start] + emptied.frame() + data[end:])
