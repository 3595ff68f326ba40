"""Restoring vaulted messages into a user's mailbox (``ourmail vault restore``, docs/vault.md).

A message is read back from its ``capture`` record and the ``blob`` record of its body
(docs/vault-format.md), checked against the ``message_sha256`` and ``size`` its capture
recorded, and delivered through the store's own ``IUserStore.deliver`` path (journaled,
durable, seen by IMAP at once), with the time it was captured as its internal date.  Each run
is one ``audit`` record and one ``audit.log`` line.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from ourmail.interfaces import Actor, FolderExists, IAuditLog, IUserStore
from ourmail.vault.audit import audit
from ourmail.vault.scan import entries
from ourmail.vault.segments import Position, SegmentLog


class RestoreRefused(ValueError):
    """A record that cannot be restored: the message says which and why."""


@attrs.frozen
class Vaulted:
    """A message read back from the vault."""

    seq: int
    data: bytes
    captured: float


def read_messages(log: SegmentLog, seqs: Iterable[int]) -> list[Vaulted]:
    """The messages of these capture records, in the order asked, from one ordered pass
    over the metadata (a blob always comes before the first capture that uses it).
    RestoreRefused for a seq that is no capture, or whose content retention removed.
    Blocks on the disk: call it in a thread."""
    wanted = list(dict.fromkeys(seqs))
    if not wanted:
        raise RestoreRefused("no record numbers given")
    left = set(wanted)
    blobs: dict[str, tuple[Position, int, int]] = {}
    found: dict[int, Vaulted] = {}
    for entry in entries(log):
        if not left:
            break
        fields = entry.fields
        if entry.kind == "blob":
            length = int(fields.get("length", 0))
            blobs[str(fields.get("sha256"))] = (entry.position, entry.stored, length)
            continue
        if entry.seq not in left:
            continue
        left.discard(entry.seq)
        if entry.kind != "capture":
            raise RestoreRefused(f"record {entry.seq} is a {entry.kind} record, not a message")
        found[entry.seq] = _message(log, entry.seq, fields, entry.position, entry.stored, blobs)
    if left:
        missing = ", ".join(str(s) for s in sorted(left))
        raise RestoreRefused(f"the vault has no record {missing}")
    return [found[s] for s in wanted]


def _message(
    log: SegmentLog,
    seq: int,
    fields: dict[str, Any],
    position: Position,
    stored: int,
    blobs: dict[str, tuple[Position, int, int]],
) -> Vaulted:
    size, length = int(fields.get("size", 0)), int(fields.get("length", 0))
    blob = blobs.get(str(fields.get("body")))
    if (length and not stored) or (blob is not None and blob[2] and not blob[1]):
        raise RestoreRefused(
            f"record {seq}: retention removed this message's content; its envelope and "
            "hashes remain"
        )
    if blob is None and size > length:
        raise RestoreRefused(f"record {seq}: the vault has no body for this message")
    header = log.read_at(position).plain()
    body = log.read_at(blob[0]).plain() if blob is not None and blob[1] else b""
    data = header + body
    if len(data) != size or hashlib.sha256(data).hexdigest() != fields.get("message_sha256"):
        raise RestoreRefused(
            f"record {seq}: the message read back does not match its recorded hash "
            "(run `ourmail vault verify`)"
        )
    return Vaulted(seq, data, float(fields["time"]))


def restore(
    log: SegmentLog,
    user: IUserStore,
    seqs: Sequence[int],
    folder: str,
    by: Actor,
    trail: IAuditLog | None = None,
) -> Deferred[list[tuple[int, int]]]:
    """Deliver these vaulted messages into ``folder`` of ``user`` (created if missing);
    fires with (seq, uid) pairs once they are durable.  The audit record is written first
    (an attempt the trail cannot record is not made); nothing is delivered when any seq
    cannot be restored."""
    return Deferred.fromCoroutine(_restore(log, user, seqs, folder, by, trail))


async def _restore(
    log: SegmentLog,
    user: IUserStore,
    seqs: Sequence[int],
    folder: str,
    by: Actor,
    trail: IAuditLog | None,
) -> list[tuple[int, int]]:
    messages = await deferToThread(read_messages, log, seqs)
    if folder.upper() != "INBOX" and folder not in user.list_folders():
        with contextlib.suppress(FolderExists):
            user.create_folder(folder)
    target = user.folder(folder)
    listed = " ".join(str(m.seq) for m in messages)
    detail = f"to {user.address} folder {folder}"
    await deferToThread(audit, log, by, "restore", listed, len(messages), detail, trail)
    done = []
    for message in messages:
        uid = await target.append(message.data, (), message.captured)
        done.append((message.seq, uid))
    return done
