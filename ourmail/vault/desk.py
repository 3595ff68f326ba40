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
  is found (the catch-up holds the index's lock; the server's own catch-ups wait).
* An export is written under ``<vault>/exports/`` (mode 0700, on the vault's volume, so the
  messages never leave it unprotected); the console streams it and removes it.
"""

from __future__ import annotations

import json
import os
import secrets
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
        self._sweep()

    def _sweep(self) -> None:
        """Remove exports a stopped server left half-sent (at start)."""
        if self.exports.is_dir():
            for left in self.exports.iterdir():
                left.unlink(missing_ok=True)

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
    ) -> Deferred[tuple[int, list[VaultHit]]]:
        return self._thread(self._search, actor, query, offset, limit)

    def _search(
        self, actor: Actor, query: VaultQuery, offset: int, limit: int
    ) -> tuple[int, list[VaultHit]]:
        if self.indexer is not None:
            self.indexer.catch_up()
        try:
            total, hits = self.index.search(query, offset, limit)
        except QueryError as e:
            raise VaultRefused("bad-query", str(e)) from None
        self._audit(actor, "search", query_text(query), total, f"from {offset}, {len(hits)}")
        return total, hits

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
        if self.indexer is not None:
            self.indexer.catch_up()
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
        out = self.exports / f"export-{secrets.token_hex(8)}.zip"
        # Audited before it is written: no export exists that the trail does not name.
        self._audit(actor, "export", query_text(query), len(seqs), f"started: zip {out.name}")
        try:
            done = export(self.log, seqs, "zip", out, query_text(query))
        except ExportError as e:
            self._audit(actor, "export", query_text(query), 0, f"refused: {e}")
            raise VaultRefused("not-found", str(e)) from None
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
