"""``ourmail vault verify``: one streaming pass that checks every record of the vault.

It checks what docs/vault-format.md lists, record by record: the frame parses, ``seq``
follows by one, ``prev`` is the previous record's hash and the frame's hash is
``sha256(prev + meta)``, the content has its ``sha256`` and ``length`` (or an ``expire``
record names it as removed), each segment's header follows the segment before, and the
last record matches ``head``; and, given anchors (heads taken earlier, signed ones from
``heads.log``), that the vault still holds those records with those hashes.

Implementation notes:

* Memory is bounded whatever the vault holds: frames are read one at a time and content in
  chunks (:mod:`ourmail.vault.reader`); only the hashes of the last :data:`WINDOW` records
  are kept (to tell a swap from a change), plus what is pending because of a problem (the
  seqs skipped, those waiting for their predecessor) and the seqs whose content is absent
  until an ``expire`` record names them.  When the vault has ``expire`` records, the seqs
  they name are kept too (an int each) with the rules and holds in force at each, and a
  second pass reads the metadata alone (:mod:`ourmail.vault.scan`) to check that each was
  expired as the rules allowed (:meth:`_Verifier.check_expiry`).
* It goes on after a problem and reports every one, each naming the record (by the seq it
  should have, where its own metadata cannot be trusted), its segment and offset.
* Records appended while it runs (the server keeps writing) are checked too; the head is
  the one read at the start.  Blocking: a command, or a thread.
* Without anchors it proves the chain consistent, not unchanged, and says so in
  :attr:`Report.warnings`; a signed head counts only when its certificate's key is trusted.
"""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ourmail.vault import heads as signed_heads
from ourmail.vault.reader import Frame, SegmentFile, plain_chunks
from ourmail.vault.records import GENESIS, KINDS, FormatError, Truncated, chain_hash
from ourmail.vault.retention import (
    FOREVER,
    Facts,
    Hold,
    Rule,
    State,
    envelope_of,
    query_matches,
)
from ourmail.vault.scan import entries
from ourmail.vault.segments import SegmentLog

#: How many of the last records' hashes are kept, to check a record read out of order.
WINDOW = 4096
#: Problems kept for the report; past this they are only counted.
MAX_PROBLEMS = 10_000
#: A list of record numbers in a metadata that does not parse (a damaged ``expire`` record).
_LISTS = re.compile(rb"\[(\d+(?:,\d+)*)\]")


@attrs.frozen
class Problem:
    """Something wrong with the vault, said precisely."""

    #: ``changed``, ``missing``, ``order``, ``repeated``, ``link``, ``content``, ``absent``,
    #: ``truncated``, ``damaged``, ``segment``, ``head``, ``anchor`` or ``expire`` (an
    #: ``expire`` record that removed what the rules and holds of its time kept, or a
    #: ``rule`` record no command writes).
    kind: str
    text: str
    seq: int | None = None
    segment: int | None = None
    offset: int | None = None


@attrs.frozen
class Anchor:
    """A head taken earlier: record ``seq`` had hash ``hash``; ``signed`` when it came from
    heads.log (its signature is checked too)."""

    seq: int
    hash: str
    signed: signed_heads.SignedHead | None = None

    @property
    def name(self) -> str:
        if self.signed is not None:
            return f"the head signed at {self.signed.time}"
        return f"anchor {self.seq}:{self.hash[:12]}…"


def parse_anchor(text: str) -> Anchor:
    """``SEQ:HASH`` (ValueError when it is not one)."""
    seq, _, digest = text.partition(":")
    digest = digest.strip().lower()
    if not seq.strip().isdigit() or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ValueError(f"not SEQ:HASH (a record number and a SHA-256 in hex): {text!r}")
    return Anchor(int(seq), digest)


@attrs.define
class Report:
    """What a verification found."""

    records: int = 0
    segments: int = 0
    octets: int = 0
    seconds: float = 0.0
    head: tuple[int, str] = (0, GENESIS)
    last: tuple[int, str] = (0, GENESIS)
    anchors: int = 0
    problems: list[Problem] = attrs.Factory(list)
    #: Problems found past :data:`MAX_PROBLEMS` (counted, not kept).
    more: int = 0
    notes: list[str] = attrs.Factory(list)
    #: What the verification could not prove (no signed head, signers not checked).
    warnings: list[str] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rate(self) -> float:
        """MB/s read."""
        return self.octets / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        verdict = "whole" if self.ok else f"NOT whole: {len(self.problems) + self.more} problems"
        return (
            f"{self.records} records in {self.segments} segments, {self.octets} octets read"
            f" in {self.seconds:.2f} s ({self.rate:.1f} MB/s); last record {self.last[0]};"
            f" {self.anchors} anchors checked; the vault is {verdict}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "segments": self.segments,
            "octets": self.octets,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.rate, 1),
            "head": {"seq": self.head[0], "hash": self.head[1]},
            "last": {"seq": self.last[0], "hash": self.last[1]},
            "anchors": self.anchors,
            "problems": [attrs.asdict(p) for p in self.problems],
            "more_problems": self.more,
            "notes": self.notes,
            "warnings": self.warnings,
        }


@attrs.frozen
class _Expire:
    """An ``expire`` record, with the rules and holds in force when it was written."""

    seq: int
    time: float
    rules: dict[str, Rule]
    holds: dict[str, Hold]
    named: tuple[int, ...]


def verify(
    log: SegmentLog,
    anchors: Sequence[Anchor] = (),
    certificates: Sequence[Path] = (),
    local_domains: Sequence[str] = (),
    trusted: Sequence[x509.Certificate] | None = None,
) -> Report:
    """Check the whole vault of ``log`` (see the module text).  ``certificates``: folders of
    ``<fingerprint>.pem`` certificates for the signed anchors (the vault's ``certs/`` first).
    ``local_domains``: the domains the server serves, for the rules an ``expire`` record is
    checked against (none: every address asks for its rule, which keeps mail at least as
    long).  ``trusted``: the certificates whose keys may sign heads (the server's, those an
    auditor gives); a head signed by another key is a problem.  None: signers are not
    checked, and the report warns of it."""
    verifier = _Verifier(log, anchors, (log.root / signed_heads.CERTS, *certificates))
    verifier.state = State(tuple(d.lower() for d in local_domains))
    verifier.trusted = None if trusted is None else {_key_of(c) for c in trusted}
    report = verifier.run()
    signed = verifier.signed_checked
    if not report.anchors:
        report.warnings.append(
            "no signed head checked: this proves the chain is consistent, not that it is "
            "unchanged (a vault rewritten whole is consistent too)"
        )
    elif signed and trusted is None:
        report.warnings.append(
            "the certificates that signed the heads were not checked against a trusted one"
        )
    if verifier.covered < report.last[0]:
        first = verifier.covered + 1
        report.notes.append(
            f"records {first} to {report.last[0]} are newer than every head checked"
            if report.anchors
            else f"records {first} to {report.last[0]} are covered by no head"
        )
    return report


def _key_of(certificate: x509.Certificate) -> bytes:
    """The certificate's public key (DER): a renewal that keeps the key is the same signer."""
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


class _Verifier:
    def __init__(
        self, log: SegmentLog, anchors: Sequence[Anchor], folders: tuple[Path, ...]
    ) -> None:
        self.log = log
        self.folders = folders
        self.report = Report(head=log.head())
        self.anchors: dict[int, list[Anchor]] = {}
        for anchor in anchors:
            self.anchors.setdefault(anchor.seq, []).append(anchor)
        self.expected = 1
        self.last_seq, self.last_hash = 0, GENESIS
        self.read_seq = 0
        self.recent: dict[int, str] = {0: GENESIS}
        self.waiting: dict[int, tuple[int, str, int, int]] = {}
        self.skipped: list[tuple[int, int]] = []
        self.absent: dict[int, tuple[int, int]] = {}
        #: seq -> the hash its metadata gives, for the last records whose frame says otherwise.
        self.changed: dict[int, str] = {}
        self.head_seen = False
        #: The rules and holds so far (rebuilt as expiry builds them), and each ``expire``
        #: record met, to check once the pass is over (:meth:`check_expiry`).
        self.state = State(())
        self.expires: dict[int, _Expire] = {}
        #: seq -> the first ``expire`` record that names it.
        self.named_by: dict[int, int] = {}
        #: The rules of the expire record last checked against, as a State.
        self.rules_at: dict[int, State] = {}
        #: The keys heads may be signed with (None: not checked).
        self.trusted: set[bytes] | None = None
        self.signed_checked = 0
        #: The highest record an anchor checked.
        self.covered = 0
        #: Blobs reported as removed while a capture still used them (once each).
        self.blob_reported: set[int] = set()

    def problem(
        self,
        kind: str,
        text: str,
        seq: int | None = None,
        segment: int | None = None,
        offset: int | None = None,
    ) -> None:
        if len(self.report.problems) >= MAX_PROBLEMS:
            self.report.more += 1
            return
        self.report.problems.append(Problem(kind, text, seq, segment, offset))

    def run(self) -> Report:
        started = time.monotonic()
        previous = 0
        found = self.log.segments()
        for index, (number, path) in enumerate(found):
            self.report.segments += 1
            if number != previous + 1:
                gone = (
                    f"{previous + 1}"
                    if number == previous + 2
                    else f"{previous + 1} to {number - 1}"
                )
                word = "segment" if number == previous + 2 else "segments"
                self.problem("segment", f"{word} {gone} missing", segment=previous + 1)
            try:
                self.segment(number, path, previous, last=index == len(found) - 1)
            except OSError as e:
                self.problem("segment", f"segment {number} cannot be read: {e}", segment=number)
            previous = number
        self.finish()
        self.report.seconds = time.monotonic() - started
        return self.report

    def segment(self, number: int, path: Path, previous: int, last: bool) -> None:
        with SegmentFile(path) as f:
            self.report.octets += f.size
            try:
                header = f.header()
            except FormatError as e:
                self.problem(
                    "segment", f"segment {number} ({path}) has no header: {e}", segment=number
                )
                return
            if header.number != number:
                self.problem(
                    "segment",
                    f"segment file {path.name} says it is segment {header.number}",
                    segment=number,
                )
            if (header.first_seq, header.prev) != (self.last_seq + 1, self.last_hash):
                after = f"segment {previous}" if previous else "the start of the vault"
                self.problem(
                    "segment",
                    f"segment {number}'s header does not follow {after}: it starts at record "
                    f"{header.first_seq} after hash {header.prev[:12]}…, but the records before "
                    f"end at record {self.last_seq} with hash {self.last_hash[:12]}…",
                    segment=number,
                )
            offset = header.length
            while offset < f.size:
                try:
                    frame = f.frame_at(offset)
                except FormatError as e:
                    found = f.resync(offset)
                    if found is None and isinstance(e, Truncated):
                        self.truncated(number, offset, last)
                        return
                    then = "the rest of it" if found is None else f"up to offset {found.offset}"
                    self.problem(
                        "damaged",
                        f"segment {number} damaged at offset {offset} after "
                        f"record {self.last_seq}: {e}; {then} cannot be read",
                        segment=number,
                        offset=offset,
                    )
                    if found is None:
                        return
                    frame = found
                self.record(f, number, frame)
                offset = frame.end

    def truncated(self, number: int, offset: int, last: bool) -> None:
        if last and self.head_seen:
            self.report.notes.append(
                f"segment {number} ends in a record being written at offset {offset}"
            )
            return
        self.problem(
            "truncated",
            f"segment {number} truncated at offset {offset} after record {self.last_seq}",
            segment=number,
            offset=offset,
        )

    def record(self, f: SegmentFile, segment: int, frame: Frame) -> None:
        self.report.records += 1
        where = f"(segment {segment}, offset {frame.offset})"
        try:
            fields = frame.fields()
            seq, prev = int(fields["seq"]), str(fields["prev"])
            own = chain_hash(prev, frame.meta)
        except (FormatError, KeyError, ValueError, TypeError) as e:
            self.problem(
                "changed",
                f"record {self.expected} {where} changed: its metadata cannot be read "
                f"({e}){self.salvage(frame.meta)}",
                self.expected,
                segment,
                frame.offset,
            )
            self.place(self.expected, frame.hash, None, frame, segment)
            return
        intact = own == frame.hash
        if not intact:
            if seq != self.expected and not self.is_skipped(seq):
                seq = self.expected  # its seq is no more trusted than the rest of it
            # The next record may name either: the frame's (its meta was changed) or this
            # one (the frame's hash was); the change is reported once, here.
            self.changed[seq] = own
            if len(self.changed) > WINDOW:
                del self.changed[next(iter(self.changed))]
            self.problem(
                "changed",
                f"record {seq} {where} changed: its hash does not match{self.salvage(frame.meta)}",
                seq,
                segment,
                frame.offset,
            )
        self.place(seq, frame.hash, prev, frame, segment)
        if fields.get("kind") not in KINDS:
            self.problem(
                "changed",
                f"record {seq} {where} is of no known kind: {str(fields.get('kind'))[:40]!r}",
                seq,
                segment,
                frame.offset,
            )
        self.content(f, seq, fields, frame, segment)
        if fields.get("kind") == "expire":
            for named in fields.get("records", ()):
                if isinstance(named, int):
                    self.absent.pop(named, None)
            if intact:  # a changed one is reported once, above
                self.expire(seq, fields)
        keep = fields.get("keep_days")
        if fields.get("kind") == "rule" and not (keep is None or (type(keep) is int and keep > 0)):
            # retention.rule_item writes none other: a rule that would expire mail at once
            # is a forger's.
            self.problem(
                "expire", f"rule record {seq} {where} keeps mail {keep!r} days", seq, segment
            )
        if fields.get("kind") in ("rule", "hold", "release"):
            try:
                self.state.add(fields)
            except (KeyError, ValueError, TypeError) as e:
                self.problem(
                    "changed", f"record {seq} {where} cannot be read as a {fields['kind']}: {e}"
                )

    def salvage(self, meta: bytes) -> str:
        """For a changed record that looks like an ``expire`` record: take the record
        numbers it seems to name, so that the content they lack is not reported again for
        each (the change is the one problem); the words to add to its report."""
        if b'"expire"' not in meta:
            return ""
        named = {int(n) for group in _LISTS.findall(meta) for n in group.split(b",")}
        for seq in named:
            self.absent.pop(seq, None)
        plural = "" if len(named) == 1 else "s"
        return f"; it looks like an expire record naming {len(named)} record{plural}"

    def expire(self, seq: int, fields: dict[str, Any]) -> None:
        """Keep an ``expire`` record to check its names (:meth:`check_expiry`), and check
        now that the rules it names are those in force."""
        try:
            when = float(fields["time"])
            named = tuple(int(n) for n in fields.get("records", ()))
        except (KeyError, ValueError, TypeError) as e:
            self.problem("expire", f"expire record {seq} cannot be read: {e}", seq)
            return
        said_rules = fields.get("rule", [])
        if not isinstance(said_rules, list):
            self.problem("expire", f"expire record {seq} names no list of rules", seq)
            said_rules = []
        for said in said_rules:
            scope = str(said.get("scope", "")) if isinstance(said, dict) else repr(said)
            keep = said.get("keep_days") if isinstance(said, dict) else None
            rule = self.state.rules.get(scope, FOREVER if scope == "default" else None)
            if rule is None or rule.keep_days != keep or keep is None:
                kept = "forever" if keep is None else f"{keep} days"
                self.problem(
                    "expire",
                    f"expire record {seq} names the rule {scope}={kept}, which was not in "
                    "force then",
                    seq,
                )
        for name in named:
            if name >= seq:
                self.problem(
                    "expire",
                    f"expire record {seq} names record {name}, which is not before it",
                    seq,
                )
            self.named_by.setdefault(name, seq)
        self.expires[seq] = _Expire(
            seq, when, dict(self.state.rules), dict(self.state.holds), named
        )

    def place(self, seq: int, digest: str, prev: str | None, frame: Frame, segment: int) -> None:
        """Check ``seq``'s place in the order and in the chain."""
        where = f"(segment {segment}, offset {frame.offset})"
        if seq > self.expected:
            self.skipped.append((self.expected, seq - 1))
        elif seq < self.expected:
            if self.is_skipped(seq):
                self.unskip(seq)
                low, high = sorted((seq, self.read_seq))
                self.problem(
                    "order", f"records {low} and {high} out of order", seq, segment, frame.offset
                )
            else:
                self.problem(
                    "repeated",
                    f"record {seq} {where} repeats an earlier record",
                    seq,
                    segment,
                    frame.offset,
                )
        if prev is not None:
            before = self.recent.get(seq - 1)
            if before is None:
                self.waiting[seq - 1] = (seq, prev, segment, frame.offset)
                if len(self.waiting) > WINDOW:  # never seen: the gap is reported as missing
                    del self.waiting[next(iter(self.waiting))]
            elif prev not in (before, self.changed.get(seq - 1)):
                self.link(seq, segment, frame.offset)
        waiter = self.waiting.pop(seq, None)
        if waiter is not None and waiter[1] not in (digest, self.changed.get(seq)):
            self.link(waiter[0], waiter[2], waiter[3])
        self.recent[seq] = digest
        if len(self.recent) > WINDOW:
            del self.recent[next(iter(self.recent))]  # the oldest: seqs come in order
        self.read_seq = seq
        if seq >= self.expected:
            self.expected = seq + 1
            self.last_seq, self.last_hash = seq, digest
        self.report.last = (self.last_seq, self.last_hash)
        for anchor in self.anchors.pop(seq, ()):
            self.anchor(anchor, digest)
        if seq == self.report.head[0]:
            self.head_seen = True
            if digest != self.report.head[1]:
                self.problem(
                    "head",
                    f"head names record {seq} with hash "
                    f"{self.report.head[1][:12]}…, but record {seq}'s hash is "
                    f"{digest[:12]}…",
                    seq,
                )

    def link(self, seq: int, segment: int, offset: int) -> None:
        self.problem(
            "link",
            f"record {seq} (segment {segment}, offset {offset}) does not follow record "
            f"{seq - 1}: its prev is not record {seq - 1}'s hash (one of them was changed)",
            seq,
            segment,
            offset,
        )

    def is_skipped(self, seq: int) -> bool:
        return any(low <= seq <= high for low, high in self.skipped)

    def unskip(self, seq: int) -> None:
        kept: list[tuple[int, int]] = []
        for low, high in self.skipped:
            if low <= seq <= high:
                kept.extend(r for r in ((low, seq - 1), (seq + 1, high)) if r[0] <= r[1])
            else:
                kept.append((low, high))
        self.skipped = kept

    def content(
        self, f: SegmentFile, seq: int, fields: dict[str, Any], frame: Frame, segment: int
    ) -> None:
        where = f"(segment {segment}, offset {frame.offset})"
        if "sha256" not in fields:
            if frame.content_length:
                self.problem(
                    "content",
                    f"record {seq} {where} has content its metadata does not name",
                    seq,
                    segment,
                    frame.offset,
                )
            return
        length = fields.get("length")
        if frame.content_length == 0 and length:
            self.absent[seq] = (segment, frame.offset)
            return
        digest, total = hashlib.sha256(), 0
        try:
            for chunk in plain_chunks(f.chunks(frame), bool(fields.get("zlib"))):
                digest.update(chunk)
                total += len(chunk)
        except zlib.error as e:
            self.problem(
                "content",
                f"record {seq}'s content {where} does not match its "
                f"sha256: it does not decompress ({e})",
                seq,
                segment,
                frame.offset,
            )
            return
        if digest.hexdigest() != fields["sha256"] or total != length:
            self.problem(
                "content",
                f"record {seq}'s content {where} does not match its sha256",
                seq,
                segment,
                frame.offset,
            )

    def anchor(self, anchor: Anchor, digest: str) -> None:
        self.report.anchors += 1
        self.covered = max(self.covered, anchor.seq)
        if digest != anchor.hash:
            self.problem(
                "anchor",
                f"{anchor.name} names record {anchor.seq} with hash "
                f"{anchor.hash[:12]}…, but the vault's record {anchor.seq} has hash "
                f"{digest[:12]}…",
                anchor.seq,
            )
        signed = anchor.signed
        if signed is None:
            return
        certificate = signed_heads.certificate_for(signed, self.folders)
        if certificate is None:
            self.problem(
                "anchor",
                f"{anchor.name}: its certificate {signed.fingerprint[:16]}… is not found",
                anchor.seq,
            )
        elif not signed_heads.signature_valid(signed, certificate):
            self.problem(
                "anchor",
                f"{anchor.name}: its signature does not verify with "
                f"certificate {signed.fingerprint[:16]}…",
                anchor.seq,
            )
        elif self.trusted is not None and _key_of(certificate) not in self.trusted:
            self.problem(
                "anchor",
                f"{anchor.name}: it is signed by certificate {signed.fingerprint[:16]}…, "
                "whose key is neither the server's TLS key nor one given with --trust",
                anchor.seq,
            )
        else:
            self.signed_checked += 1

    def check_expiry(self) -> None:
        """A second pass over the metadata, only when the vault has ``expire`` records: each
        seq one names is an earlier capture that the rules in force at the expire record's
        time no longer kept and no hold covered, or a blob every capture of which that uses
        it was expired by then (docs/vault.md#verify-and-export)."""
        if not self.expires:
            return
        last = max(self.expires)
        #: body sha -> the latest blob with it, while an expire record names that blob.
        named_blobs: dict[str, int] = {}
        try:
            for entry in entries(self.log):
                seq, kind = entry.seq, entry.kind
                if seq > last:
                    break
                by = self.named_by.get(seq)
                if kind == "blob":
                    sha = str(entry.fields.get("sha256"))
                    if by is None:
                        named_blobs.pop(sha, None)
                    else:
                        named_blobs[sha] = seq
                elif kind == "capture":
                    blob = named_blobs.get(str(entry.fields.get("body")))
                    if blob is not None:
                        self.blob_user(blob, seq, by)
                    if by is not None:
                        self.expired_capture(self.expires[by], seq, entry.fields)
                elif by is not None:
                    self.problem(
                        "expire",
                        f"expire record {by} removed record {seq}, which is a {kind}, not a "
                        "message",
                        seq,
                    )
        except (FormatError, OSError, KeyError, ValueError, TypeError) as e:
            self.problem("expire", f"the expire records could not be checked: {e}")

    def blob_user(self, blob: int, seq: int, by: int | None) -> None:
        """Capture ``seq`` uses ``blob``'s body, which an expire record removed."""
        removed = self.named_by[blob]
        if seq < removed and (by is None or by > removed) and blob not in self.blob_reported:
            self.blob_reported.add(blob)
            self.problem(
                "expire",
                f"expire record {removed} removed record {blob}, the body of record {seq}, "
                "which was not expired then",
                blob,
            )

    def expired_capture(self, record: _Expire, seq: int, fields: dict[str, Any]) -> None:
        """The capture ``seq`` that ``record`` names was past its retention and not held."""
        state = self.rules_at.get(record.seq)
        if state is None:
            self.rules_at = {record.seq: State(self.state.local_domains, rules=record.rules)}
            state = self.rules_at[record.seq]
        envelope = envelope_of(fields)
        captured = float(fields["time"])
        until = state.keep_until(envelope, captured)
        if until > record.time:
            rule = state.rule_for(envelope).describe()
            kept = (
                "forever"
                if until == float("inf")
                else "until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until))
            )
            self.problem(
                "expire",
                f"expire record {record.seq} removed record {seq}, which rule {rule} kept {kept}",
                seq,
            )
        addresses = envelope.addresses()
        domains = {a.rpartition("@")[2] for a in addresses}
        for hold in record.holds.values():
            query = hold.query
            if (
                hold.scope.get("user") in addresses
                or hold.scope.get("domain") in domains
                or (
                    query is not None
                    and not (query.words or query.attachment)
                    and query_matches(query, envelope, captured, Facts())
                )
            ):
                self.problem(
                    "expire",
                    f"expire record {record.seq} removed record {seq}, which hold "
                    f"{hold.name} ({hold.describe()}) covered",
                    seq,
                )
                break

    def finish(self) -> None:
        self.check_expiry()
        for low, high in self.skipped:
            if low == high:
                text = f"record {low} missing between {low - 1} and {low + 1}"
            else:
                text = f"records {low} to {high} missing between {low - 1} and {high + 1}"
            self.problem("missing", text, low)
        for seq, (segment, offset) in sorted(self.absent.items()):
            self.problem(
                "absent",
                f"record {seq}'s content (segment {segment}, offset {offset}) is absent, and "
                "no expire record names it",
                seq,
                segment,
                offset,
            )
        head_seq = self.report.head[0]
        if head_seq > self.last_seq:
            self.problem(
                "head",
                f"head names record {head_seq}, but the last record is {self.last_seq}",
                head_seq,
            )
        for seq, anchors in sorted(self.anchors.items()):
            for anchor in anchors:
                self.report.anchors += 1
                self.problem(
                    "anchor",
                    f"{anchor.name} names record {seq}, past the last record {self.last_seq}",
                    seq,
                )


def signed_anchors(path: Path) -> Iterable[Anchor]:
    """The signed heads of a heads file as anchors (HeadError when it cannot be read)."""
    return [Anchor(h.seq, h.hash, h) for h in signed_heads.read(path)]
