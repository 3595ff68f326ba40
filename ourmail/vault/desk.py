"""The vault as the admin console uses it (:class:`~ourmail.interfaces.IVaultDesk`,
docs/vault.md#the-console): the code of ``ourmail vault search`` and ``export``, in threads,
for admins with the vault role, every search, view and export in the vault's audit trail
before its answer.

Implementation notes (keep these true when changing this module):

* The audit record is appended and fsynced before anything is returned: a search's hits, a
  record's header, an export's file.  When it cannot be (a full disk, a damaged tail), the
  console is told ``VaultRefused("audit")`` and shows nothing.  An export is audited twice:
  before it is written (what was chosen, how many) and after (its size and SHA-256).
* A search first catches the index up with the segments, so a message captured a moment ago
  is found (the catch-up holds the index's lock; the server's own catch-ups wait).  An index
  far behind (:data:`MAX_CATCH_UP`: new, or rebuilt) is not caught up inside a request: the
  page says how far the server's indexer has got.
* An export is written under ``<vault>/exports/`` (mode 0700, on the vault's volume, so the
  messages never leave it unprotected), one at a time, only when the volume keeps
  :data:`RESERVE` free for capture besides; the console streams it and removes it.  Its name
  holds the process id, so a server starting sweeps only what a dead process left.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from ourmail.config import AdminSettings
from ourmail.interfaces import (
    Actor,
    IAuditLog,
    IVaultDesk,
    IVaultIndex,
    VaultEnvelope,
    VaultHit,
    VaultMessage,
    VaultQuery,
    VaultRefused,
)
from ourmail.vault.audit import audit
from ourmail.vault.catalog import Catalog
from ourmail.vault.export import ExportError, export, select
from ourmail.vault.index import QueryError
from ourmail.vault.indexer import Indexer
from ourmail.vault.role import may_use_vault
from ourmail.vault.segments import Damaged, SegmentLog

#: Longest header section shown on a record's page.
MAX_HEADER = 64 * 1024
#: Where the console's exports wait while they are sent, under the vault folder.
EXPORTS = "exports"
#: Records the index may lag behind the vault for a search to catch it up on the spot;
#: further behind, the server's indexer catches up in the background and the page says so.
MAX_CATCH_UP = 5000
#: Octets an export leaves free on the vault's volume, for capture.
RESERVE = 1 << 30


def query_text(query: VaultQuery) -> str:
    """The criteria of ``query`` that are set, as JSON: the audit record's ``query``."""
    asked = {k: v for k, v in attrs.asdict(query).items() if v not in ("", None)}
    return json.dumps(asked, ensure_ascii=False, sort_keys=True)


@implementer(IVaultDesk)
class VaultDesk:
    """:class:`IVaultDesk` over the server's vault (see the module text)."""

    def __init__(
        self,
        log: SegmentLog,
        catalog: Catalog,
        index: IVaultIndex,
        indexer: Indexer | None,
        admin: AdminSettings,
        trail: IAuditLog | None,
        reactor: Any,
    ) -> None:
        self.log = log
        self.catalog = catalog
        self.index = index
        self.indexer = indexer
        self.admin = admin
        self.trail = trail
        self.reactor = reactor
        self.exports = log.root / EXPORTS
        self._exporting = threading.Lock()
        self._sweep()

    def _sweep(self) -> None:
        """Remove the exports that no live process is sending: those of a process that has
        ended (a stopped server left them half-sent), and any older than a day (at start)."""
        if not self.exports.is_dir():
            return
        for left in self.exports.iterdir():
            _, _, rest = left.name.partition("export-")
            pid = rest.partition("-")[0]
            with contextlib.suppress(OSError):
                old = time.time() - left.stat().st_mtime > 86400
                if old or not (pid.isdigit() and _alive(int(pid))):
                    left.unlink()

    def may_use(self, address: str) -> bool:
        return may_use_vault(self.admin, address)

    def _thread(self, work: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), work, *args)

    def _audit(self, actor: Actor, action: str, query: str, count: int, detail: str) -> None:
        try:
            audit(self.log, actor, action, query, count, detail, self.trail)
        except (OSError, Damaged) as e:
            raise VaultRefused("audit", f"the vault's audit trail cannot be written: {e}") from e

    # -- search ------------------------------------------------------------------------------

    def search(
        self, actor: Actor, query: VaultQuery, offset: int, limit: int
    ) -> Deferred[tuple[int, bool, list[VaultHit]]]:
        return self._thread(self._search, actor, query, offset, limit)

    def _search(
        self, actor: Actor, query: VaultQuery, offset: int, limit: int
    ) -> tuple[int, bool, list[VaultHit]]:
        self._caught_up()
        try:
            total, hits = self.index.search(query, offset, limit)
        except QueryError as e:
            raise VaultRefused("bad-query", str(e)) from None
        exact = total < offset + self.index.count_limit
        self._audit(actor, "search", query_text(query), total, f"from {offset}, {len(hits)}")
        return total, exact, hits

    def _caught_up(self) -> None:
        """Thread: bring the index up to the vault's head when that is quick; when it is far
        behind (a new or rebuilt index), leave that to the server's follower process
        (:mod:`ourmail.vault.indexfollow`) and refuse."""
        if self.indexer is None:
            return
        behind = self.log.head()[0] - self.index.last_seq()
        if behind > MAX_CATCH_UP:  # the server's follower process catches up meanwhile
            raise VaultRefused(
                "indexing",
                f"{self.index.last_seq()} of {self.log.head()[0]} records read",
            )
        self.indexer.catch_up()

    # -- one record ----------------------------------------------------------------------------

    def message(self, actor: Actor, seq: int) -> Deferred[VaultMessage]:
        return self._thread(self._message, actor, seq)

    def _message(self, actor: Actor, seq: int) -> VaultMessage:
        try:
            record = self.catalog.record(seq)
        except KeyError:
            raise VaultRefused("not-found", f"no vault record {seq}") from None
        fields = record.fields
        if fields.get("kind") != "capture":
            raise VaultRefused("not-found", f"vault record {seq} is no message")
        self._audit(actor, "view", f"record {seq}", 1, "envelope and header section")
        envelope = fields.get("envelope") or {}
        return VaultMessage(
            seq=seq,
            time=float(fields["time"]),
            hash=record.hash,
            message_sha256=str(fields.get("message_sha256", "")),
            size=int(fields.get("size", 0)),
            envelope=VaultEnvelope(
                via=str(envelope.get("via", "")),
                sender=str(envelope.get("sender", "")),
                recipients=tuple(envelope.get("recipients", ())),
                mailboxes=tuple(envelope.get("mailboxes", ())),
                client=str(envelope.get("client", "")),
                user=str(envelope.get("user", "")),
                id=str(envelope.get("id", "")),
                arrival=float(envelope.get("arrival", 0.0)),
            ),
            header=record.plain()[:MAX_HEADER].decode("utf-8", "replace"),
            expired=bool(fields.get("length")) and not record.content,
        )

    # -- export --------------------------------------------------------------------------------

    def export(self, actor: Actor, query: VaultQuery, limit: int) -> Deferred[os.PathLike[str]]:
        return self._thread(self._export, actor, query, limit)

    def _export(self, actor: Actor, query: VaultQuery, limit: int) -> Path:
        if not self._exporting.acquire(blocking=False):
            raise VaultRefused("busy", "another export is being written")
        try:
            return self._export_one(actor, query, limit)
        finally:
            self._exporting.release()

    def _export_one(self, actor: Actor, query: VaultQuery, limit: int) -> Path:
        self._caught_up()
        try:
            seqs = select(self.log, query=query, index=self.index)
        except QueryError as e:
            raise VaultRefused("bad-query", str(e)) from None
        except ExportError as e:
            raise VaultRefused("too-many", str(e)) from None
        if len(seqs) > limit:
            raise VaultRefused("too-many", f"{len(seqs)} messages match")
        if not seqs:
            raise VaultRefused("not-found", "no message matches")
        self.exports.mkdir(mode=0o700, exist_ok=True)
        self._room_for(seqs)
        out = self.exports / f"export-{os.getpid()}-{secrets.token_hex(8)}.zip"
        # Audited before it is written: no export exists that the trail does not name.
        self._audit(actor, "export", query_text(query), len(seqs), f"started: zip {out.name}")
        try:
            done = export(self.log, seqs, "zip", out, query_text(query))
        except (ExportError, OSError) as e:
            out.unlink(missing_ok=True)
            self._audit(actor, "export", query_text(query), 0, f"failed: {e}")
            raise VaultRefused("failed", str(e)) from None
        try:
            self._audit(
                actor,
                "export",
                query_text(query),
                done.count,
                f"zip of {done.octets} octets, sha256 {done.sha256}, head {done.head[0]}",
            )
        except VaultRefused:
            out.unlink(missing_ok=True)
            raise
        return out

    def _room_for(self, seqs: list[int]) -> None:
        """Refuse an export the vault's volume has no room for: the messages' octets, twice
        over (the zip is not compressed much), and :data:`RESERVE` kept free for capture."""
        octets = 0
        for seq in seqs:
            with contextlib.suppress(KeyError, ValueError):
                octets += int(self.catalog.record(seq).fields.get("size", 0))
        free = shutil.disk_usage(self.exports).free
        if free < 2 * octets + RESERVE:
            raise VaultRefused(
                "no-room", f"{free} octets free, {2 * octets + RESERVE} needed for the export"
            )


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (this one included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
