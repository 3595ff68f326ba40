"""Capture: every message into the vault, in the same group commit as its mailbox copies.

:class:`Vault` is the server's :class:`~ourmail.interfaces.IVault`.  ``capture`` joins the
store's commit group (:class:`~ourmail.interfaces.ICommitGroup`); in the committer's worker
thread, before any mailbox file of the batch is placed, :meth:`Vault.write` turns each
message into a ``blob`` record (its body, unless the vault already holds that body) and a
``capture`` record (its header section and envelope), all in one append under the vault's
lock, then catalogues them.  The batch's one ``syncfs`` makes them durable with the mailbox
files; only then does ``capture``'s Deferred fire (docs/vault.md).

Implementation notes (keep these true when changing this module):

* The lock is held only for the append and the catalogue update of one batch, so an admin
  command appending at the same moment waits milliseconds: each message is read, hashed and
  compressed before the lock is taken (:func:`records.prepare`).
* Memory: while one message is prepared, it and its compressed form; then only the
  compressed forms of the batch.  The SMTP spool holds big messages in files, read here in
  the worker thread.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from ourmail.config import Settings
from ourmail.fsutil import HAVE_SYNCFS
from ourmail.interfaces import (
    ICommitGroup,
    ICommitParticipant,
    IVault,
    MessageSource,
    VaultEnvelope,
)
from ourmail.vault import records
from ourmail.vault.catalog import Catalog
from ourmail.vault.records import Content
from ourmail.vault.segments import Item, SegmentLog

log = Logger()


def header_length(message: bytes) -> int:
    """Octets of the header section, up to and including its empty line (RFC 5322 §2.1); a
    message without an empty line is all header."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := message.find(sep)) >= 0]
    if message.startswith((b"\r\n", b"\n")):  # no header fields at all
        ends.append(2 if message.startswith(b"\r\n") else 1)
    return min(ends) if ends else len(message)


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """The header section (up to and including its empty line) and the body (RFC 5322
    §2.1); a message without an empty line is all header, with an empty body."""
    end = header_length(message)
    return message[:end], message[end:]


def read_source(source: MessageSource) -> bytes:
    """The message's octets from bytes, a file or a path (worker thread)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, os.PathLike):
        with open(source, "rb") as f:
            return f.read()
    stream: BinaryIO = source
    if stream.seekable():
        where = stream.tell()
        stream.seek(0)
        try:
            return stream.read()
        finally:
            stream.seek(where)
    return stream.read()


def envelope_fields(envelope: VaultEnvelope) -> dict[str, Any]:
    """The ``envelope`` field of a capture record (docs/vault-format.md)."""
    return {
        "via": envelope.via,
        "id": envelope.id,
        "sender": envelope.sender,
        "recipients": list(envelope.recipients),
        "mailboxes": list(envelope.mailboxes),
        "client": envelope.client,
        "user": envelope.user,
        "arrival": round(envelope.arrival, 3),
    }


@attrs.frozen
class Capture:
    """One message waiting in the commit group."""

    source: MessageSource
    envelope: VaultEnvelope


@implementer(IVault, ICommitParticipant)
class Vault:
    """The vault's capture (see the module text)."""

    def __init__(
        self,
        log: SegmentLog,
        catalog: Catalog,
        group: ICommitGroup,
        clock: Callable[[], float] = time.time,
        flush_first: bool = False,
    ) -> None:
        self.log = log
        self.catalog = catalog
        self.group = group
        self.clock = clock
        #: ``[vault] flush_first``: flush each batch's records before its mailbox files are
        #: placed (always so where syncfs is missing: then nothing else flushes them).
        self.flush_first = flush_first or not HAVE_SYNCFS

    # -- IVault (reactor thread) --------------------------------------------------------------

    def capture(self, source: MessageSource, envelope: VaultEnvelope) -> Deferred[int]:
        """Keep the message with ``envelope``; fires with its capture's seq once durable."""
        d: Deferred[Any] = self.group.join(self, Capture(source, envelope))
        return d

    # -- ICommitParticipant (the committer's worker thread) ------------------------------------

    def directory(self) -> os.PathLike[str]:
        return self.log.directory

    def flush(self) -> None:
        if self.flush_first:
            self.log.flush_data()

    def write(self, items: Sequence[object]) -> list[int]:
        """Append a ``blob`` (for a body not yet stored) and a ``capture`` record per item, in
        one append under the vault's lock; the capture seqs, in order.  Sources are read and
        hashed before the lock is taken."""
        messages: list[tuple[Content, Content, str, dict[str, Any]]] = []
        for item in items:
            assert isinstance(item, Capture)
            messages.append(_prepare(item))
        with self.log.locked():
            self.catalog.match_log()  # another process appended, or a crash cut the tail
            records: list[Item] = []
            captures: list[int] = []  # where each item's capture is in ``records``
            stored: set[str] = set()
            for header, body, body_sha, fields in messages:
                if body_sha not in stored and self.catalog.blob(body_sha) is None:
                    records.append(("blob", {}, body))
                stored.add(body_sha)
                captures.append(len(records))
                records.append(("capture", fields, header))
            written = self.log.append(records, self.clock())
            self.catalog.add(written)
        return [written[i][1].seq for i in captures]


def _prepare(item: Capture) -> tuple[Content, Content, str, dict[str, Any]]:
    """One message read, hashed and compressed (before the lock: see the module text): its
    header section and body as they will be stored, the body's sha256 and the capture's
    fields; the message itself is dropped here."""
    message = read_source(item.source)
    fields: dict[str, Any] = {
        "message_sha256": hashlib.sha256(message).hexdigest(),
        "size": len(message),
        "envelope": envelope_fields(item.envelope),
    }
    end = header_length(message)
    with memoryview(message) as view:  # no copy of the body
        header = records.prepare(view[:end])
        body = records.prepare(view[end:])
    del message
    fields["body"] = body.sha256
    return header, body, body.sha256, fields


@implementer(IVault)
class NoVault:
    """``[vault] enabled = false``: nothing is captured."""

    def capture(self, source: MessageSource, envelope: VaultEnvelope) -> Deferred[int]:
        return defer.succeed(0)


def open_vault(
    vault_dir: Path,
    roots: Sequence[Path],
    group: ICommitGroup,
    segment_size: int | None = None,
    crash_point: Callable[[str], None] | None = None,
    flush_first: bool = False,
) -> Vault:
    """The vault at ``vault_dir`` (made with mode 0700), its catalog caught up (blocking:
    at start); ``crash_point``: see :class:`SegmentLog`."""
    vault_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(vault_dir, 0o700)
    segment_log = (
        SegmentLog(vault_dir, roots, crash_point=crash_point)
        if segment_size is None
        else SegmentLog(vault_dir, roots, segment_size, crash_point)
    )
    segment_log.directory.mkdir(exist_ok=True, mode=0o700)
    catalog = Catalog(vault_dir, segment_log)
    return Vault(segment_log, catalog, group, flush_first=flush_first)


def vault_log(settings: Settings) -> SegmentLog:
    """The segment log of ``<data>/vault``, with the ``[vault] roots`` and ``segment_size``
    (every part of the server and every ``ourmail vault`` command opens it so)."""
    vault = settings.vault
    return SegmentLog(settings.data_dir / "vault", vault.roots, vault.segment_size)
