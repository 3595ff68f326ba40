"""A vault written as the capture part writes it, for the retention tests: a ``blob`` for
each new body, then the ``capture``; and a check of the chain with ``records.py`` alone, as an
auditor would (not ``vault verify``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ourmail.vault import expiry, retention
from ourmail.vault.records import GENESIS, chain_hash
from ourmail.vault.segments import SegmentLog

LOCAL = ("org.test",)


class Vault:
    """A vault written as the capture part writes it."""

    def __init__(self, root: Path, local: tuple[str, ...] = LOCAL) -> None:
        self.log = SegmentLog(root)
        self.local = local
        self.bodies: set[str] = set()

    def capture(self, when: float, sender: str, to: str, subject: str, body: bytes) -> int:
        """A message from ``sender`` to ``to``, captured at ``when``; its capture's seq."""
        header = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n".encode()
        sha = hashlib.sha256(body).hexdigest()
        items: list[Any] = []
        if sha not in self.bodies:
            items.append(("blob", {}, body))
            self.bodies.add(sha)
        message = header + body
        envelope = {"via": "smtp", "id": "", "sender": sender, "recipients": [to],
                    "mailboxes": [to] if to.rpartition("@")[2] in self.local else [], "client": "",
                    "user": "", "arrival": when}  # fmt: skip
        fields = {"body": sha, "message_sha256": hashlib.sha256(message).hexdigest(),
                  "size": len(message), "envelope": envelope}  # fmt: skip
        items.append(("capture", fields, header))
        with self.log.locked():
            written = self.log.append(items, when)
        return written[-1][1].seq

    def add(self, when: float, item: Any) -> None:
        with self.log.locked():
            self.log.append([item], when)

    def rule(self, when: float, scope: str, days: int | None) -> None:
        self.add(when, retention.rule_item(scope, days, "root"))

    def hold(self, when: float, name: str, scope: dict[str, Any]) -> None:
        state = retention.load(self.log, self.local)
        self.add(when, retention.hold_item(state, name, scope, "case 12", "root"))

    def release(self, when: float, name: str) -> None:
        state = retention.load(self.log, self.local)
        self.add(when, retention.release_item(state, name, "case closed", "root"))

    def expire(self, now: float, planned: expiry.Plan | None = None) -> expiry.Report:
        return expiry.expire(self.log, self.local, now, planned)

    def contents(self) -> dict[int, bytes]:
        return {r.seq: r.content for _, r in self.log.records()}

    def check_chain(self) -> set[int]:
        """The chain is whole, each present content matches its hash, and each absent one is
        named by an ``expire`` record; returns the seqs whose content is absent."""
        prev, seq, absent, named = GENESIS, 0, set(), set()
        for _, record in self.log.records():
            fields = record.fields
            assert fields["seq"] == seq + 1 and fields["prev"] == prev
            assert record.hash == chain_hash(prev, record.meta)
            if "sha256" in fields:
                if record.content or not fields["length"]:
                    assert hashlib.sha256(record.plain()).hexdigest() == fields["sha256"]
                else:
                    absent.add(record.seq)
            if fields["kind"] == "expire":
                named.update(fields["records"])
            prev, seq = record.hash, record.seq
        assert absent <= named
        assert self.log.head() == (seq, prev)
        return absent
