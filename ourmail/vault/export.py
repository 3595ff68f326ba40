"""``ourmail vault export``: chosen messages as mbox or a zip of ``.eml`` files, with a
manifest and the chain proof, so that an auditor can check them without ourmail
(docs/vault.md#verify-and-export, docs/vault-verify.py).

What an export holds:

* the messages: ``--format mbox`` is mboxrd (RFC 4155 and its ``>From`` quoting, every
  line matching ``^>*From `` gets one more ``>``); ``--format zip`` holds ``<seq>.eml``;
* ``manifest.csv`` and ``manifest.json`` (inside the zip, or beside the mbox as
  ``PATH.manifest.csv``/``.json``): per message its seq, the capture record's hash,
  ``message_sha256``, size, envelope, segment and offset, and where it is in the export;
* ``proof.json``: the head, the signed heads of ``heads.log`` in range, the certificates
  that signed them, and then, one per line, every record's ``[seq, prev, meta]`` (meta as
  stored, no content) from the first exported record's predecessor to the head.  From it
  a checker recomputes the chain from each exported record to the head and checks each
  message's sha256 against its capture record's metadata.

Implementation notes:

* A pass over the metadata from the first chosen record on (:mod:`ourmail.vault.scan`)
  finds the bodies the chosen messages use and the seqs ``expire`` records name; then one
  ordered pass over the segments, reading frame by frame (:mod:`ourmail.vault.reader`),
  writes everything: a message is read and written, never all of them in memory.  Only the
  blobs of the chosen messages are remembered (a body comes before the first capture using
  it), so memory follows the export, not the vault; :func:`message_at` is the one place a
  message is read.
* Expiry may rewrite a segment meanwhile (a new file renamed over the old one): each segment
  is opened once, and a body is read through the handle the pass opened, so positions and
  content come from the same file.  A message whose content is gone or does not match its
  hash is ``expired`` only when an ``expire`` record names it (or its body), else
  ``damaged``.
* :mod:`ourmail.vault.exportfiles` writes each file, beside the output with a ``.part``
  suffix; they are fsynced and renamed into place.  Blocking: a command, or a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from email.utils import formatdate
from pathlib import Path
from typing import Any

import attrs

from ourmail.fsutil import fsync_dir, fsync_file
from ourmail.interfaces import IVaultIndex, VaultQuery
from ourmail.vault import heads as signed_heads
from ourmail.vault.exportfiles import Manifest, Mbox, Proof, Zip
from ourmail.vault.reader import Frame, SegmentFile
from ourmail.vault.records import GENESIS, FormatError, chain_hash
from ourmail.vault.scan import entries
from ourmail.vault.segments import Position, SegmentLog

FORMATS = ("mbox", "zip")
#: Seqs an index search may choose at most (an export of more is chosen by range).
MAX_SEARCH = 1_000_000


class ExportError(Exception):
    """An export that cannot be made: said to the admin without a traceback."""


def parse_seqs(specs: Sequence[str]) -> list[int]:
    """``["5", "1-500", "7,9"]`` -> the seqs, ascending (ExportError when one is not a
    number or a range)."""
    seqs: set[int] = set()
    for spec in specs:
        for part in spec.split(","):
            low, dash, high = part.strip().partition("-")
            if not low.isdigit() or (dash and not high.isdigit()):
                raise ExportError(f"not a record number or a range such as 1-500: {part!r}")
            first, last = int(low), int(high) if dash else int(low)
            if first < 1 or last < first:
                raise ExportError(f"not a range of record numbers: {part!r}")
            if len(seqs) + last - first > MAX_SEARCH:
                raise ExportError("too many records chosen: use --all")
            seqs.update(range(first, last + 1))
    return sorted(seqs)


def select(
    log: SegmentLog,
    seqs: Sequence[int] = (),
    everything: bool = False,
    query: VaultQuery | None = None,
    index: IVaultIndex | None = None,
) -> list[int]:
    """The seqs to export: ``seqs`` (records that are not messages are left out when the
    export is written), every record up to the head (``everything``), or the messages an
    index search with ``query`` finds (ExportError when there is no index to ask)."""
    if query is not None and not query.empty():
        if index is None:
            raise ExportError(
                "choosing messages by search needs the vault's search index, which this "
                "installation lacks: choose them with --seq or --all"
            )
        found: list[int] = []
        total = 1
        while len(found) < total:
            total, hits = index.search(query, len(found), 1000)
            if total > MAX_SEARCH:
                raise ExportError(f"the search finds {total} messages: narrow it")
            if not hits:
                break
            found.extend(h.seq for h in hits)
        seqs = [*seqs, *found]
    if everything:
        return list(range(1, log.head()[0] + 1))
    return sorted(set(seqs))


@attrs.frozen
class Exported:
    """What an export wrote."""

    out: Path
    format: str
    count: int
    #: Chosen records that are not messages, or whose message is gone or damaged.
    left_out: int
    expired: int
    damaged: int
    head: tuple[int, str]
    sha256: str
    files: tuple[Path, ...]
    octets: int
    seconds: float


@attrs.frozen
class Body:
    """Where a chosen message's body is: its blob record, in a segment the pass opened."""

    seq: int
    position: Position
    #: The stored content's length (0: expiry removed it).
    stored: int


class Bodies:
    """Reads message bodies (blob records) through the segment files the pass opened (a
    segment that expiry renamed a new file over is still read from its old file)."""

    def __init__(self) -> None:
        self.files: dict[int, SegmentFile] = {}

    def keep(self, segment: int, f: SegmentFile) -> None:
        """Keep the file ``f`` open: a chosen message's body is in it."""
        if segment not in self.files:
            self.files[segment] = f.twin()

    def read(self, at: Position) -> bytes:
        """The blob's content, uncompressed (FormatError or zlib.error when it is broken)."""
        f = self.files[at.segment]
        frame = f.frame_at(at.offset)
        return _plain(f.content(frame), bool(frame.fields().get("zlib")))

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


def message_at(bodies: Bodies, capture: bytes, body: Position | None) -> bytes:
    """A message: its capture record's header section (uncompressed) and its body blob's
    content.  The one place an export reads a body (the catalog can replace it)."""
    return capture + (bodies.read(body) if body is not None else b"")


def _signed(log: SegmentLog, first: int, last: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The signed heads of heads.log from ``first`` to ``last``, and their certificates."""
    signed, certificates = [], {}
    heads_log = log.root / signed_heads.HEADS_LOG
    if not heads_log.exists():
        return [], {}
    try:
        for item in signed_heads.read(heads_log):
            if first <= item.seq <= last:
                signed.append(json.loads(item.line()))
                pem = log.root / signed_heads.CERTS / f"{item.fingerprint}.pem"
                if pem.exists():
                    certificates[item.fingerprint] = pem.read_text()
    except signed_heads.HeadError as e:
        raise ExportError(f"the signed heads cannot be read: {e}") from None
    return signed, certificates


def export(
    log: SegmentLog,
    seqs: Sequence[int],
    format: str,
    out: Path,
    description: str = "",
) -> Exported:
    """Write the messages among ``seqs`` (ascending) to ``out`` as ``format``, with the
    manifest and the proof (see the module text)."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}: mbox or zip")
    if out.exists():
        raise ExportError(f"{out} exists: choose a new name")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent} is not a folder")
    started = time.monotonic()
    head = log.head()
    wanted = [s for s in seqs if 1 <= s <= head[0]]
    if not wanted:
        raise ExportError(f"no chosen record is in the vault (its last record is {head[0]})")
    part = out.with_name(out.name + ".part")
    extras = {
        name: out.with_name(f"{out.name}.{name}.part")
        for name in ("manifest.csv", "manifest.json", "proof.json")
    }
    opening = {
        "format": f"ourmail-vault-export 1 ({format})",
        "created": formatdate(usegmt=True),
        "selection": description,
        "head": {"seq": head[0], "hash": head[1]},
    }
    first = max(1, wanted[0] - 1)
    signed, certificates = _signed(log, first, head[0])
    writer: Mbox | Zip = Mbox(part) if format == "mbox" else Zip(part)
    manifest = Manifest(extras["manifest.csv"], extras["manifest.json"], opening)
    proof = Proof(extras["proof.json"], head, signed, certificates)
    try:
        counts = _write(log, set(wanted), head, writer, manifest, proof, first)
    except BaseException:
        for path in (part, *extras.values()):
            path.unlink(missing_ok=True)
        raise
    finally:
        writer.close()
        manifest.close()
        proof.close()
    if counts["ok"] == 0:
        for path in (part, *extras.values()):
            path.unlink(missing_ok=True)
        raise ExportError("none of the chosen records is a message the vault still holds")
    files = _place(format, out, part, extras)
    digest = hashlib.sha256()
    octets = 0
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            octets += len(chunk)
    return Exported(
        out=out,
        format=format,
        count=counts["ok"],
        left_out=len(wanted) - counts["ok"],
        expired=counts["expired"],
        damaged=counts["damaged"],
        head=head,
        sha256=digest.hexdigest(),
        files=files,
        octets=octets,
        seconds=time.monotonic() - started,
    )


def _place(format: str, out: Path, part: Path, extras: dict[str, Path]) -> tuple[Path, ...]:
    """Put the written files in place, durably: inside the zip, or beside the mbox."""
    if format == "zip":
        with zipfile.ZipFile(part, "a", zipfile.ZIP_DEFLATED, allowZip64=True) as z:
            for name, path in extras.items():
                z.write(path, name)
        for path in extras.values():
            path.unlink()
        placed: tuple[Path, ...] = (out,)
    else:
        placed = (out,)
        for name, path in extras.items():
            target = out.with_name(f"{out.name}.{name}")
            fsync_file(path)
            os.replace(path, target)
            placed += (target,)
    fsync_file(part)
    os.replace(part, out)
    fsync_dir(out.parent)
    return placed


def _write(
    log: SegmentLog,
    wanted: set[int],
    head: tuple[int, str],
    writer: Mbox | Zip,
    manifest: Manifest,
    proof: Proof,
    first: int,
) -> dict[str, int]:
    """The one ordered pass: the proof from ``first`` on, and each wanted message."""
    counts = {"ok": 0, "expired": 0, "damaged": 0}
    needed, named = _needs(log, wanted, first, head[0])
    blobs: dict[bytes, Body] = {}
    bodies = Bodies()
    try:
        for segment, frame, fields, f in _frames(log, head[0]):
            seq = int(fields["seq"])
            if seq >= first:
                proof.add(seq, str(fields["prev"]), frame.meta)
            kind = fields.get("kind")
            if kind == "blob" and (sha := bytes.fromhex(fields["sha256"])) in needed:
                # The latest blob of a body is the one a capture after it uses.
                blobs[sha] = Body(seq, Position(segment, frame.offset), frame.content_length)
                bodies.keep(segment, f)
            if kind == "capture" and seq in wanted:
                row = _row(seq, segment, frame, fields)
                status = _message(f, frame, fields, blobs, bodies, writer, row, named)
                counts[status] += 1
                manifest.add(dict(row, status=status))
    finally:
        bodies.close()
    return counts


def _needs(log: SegmentLog, wanted: set[int], first: int, last: int) -> tuple[set[bytes], set[int]]:
    """The bodies the chosen captures use, and the seqs an ``expire`` record names, from a
    pass over the metadata from ``first`` on (a record is expired after it was written)."""
    needed: set[bytes] = set()
    named: set[int] = set()
    try:
        for entry in entries(log, first - 1):
            if entry.seq > last:
                break
            if entry.kind == "capture" and entry.seq in wanted and entry.fields.get("body"):
                needed.add(bytes.fromhex(str(entry.fields["body"])))
            elif entry.kind == "expire":
                named.update(int(s) for s in entry.fields.get("records", ()))
    except (FormatError, ValueError, TypeError) as e:
        raise ExportError(f"the vault is damaged ({e}): run `ourmail vault verify`") from None
    return needed, named


def _message(
    f: SegmentFile,
    frame: Frame,
    fields: dict[str, Any],
    blobs: dict[bytes, Body],
    bodies: Bodies,
    writer: Mbox | Zip,
    row: dict[str, Any],
    named: set[int],
) -> str:
    """Write one message; its status: ``ok``, ``expired`` (its content, or its body's,
    removed and an ``expire`` record names it) or ``damaged`` (anything else wrong)."""
    seq = int(fields["seq"])
    body_sha = str(fields.get("body", ""))
    body = blobs.get(bytes.fromhex(body_sha)) if body_sha else None
    gone = "expired" if seq in named or (body is not None and body.seq in named) else "damaged"
    if (frame.content_length == 0 and fields.get("length")) or (
        body is None and body_sha != hashlib.sha256(b"").hexdigest()
    ):
        return gone
    if body is not None and body.stored == 0:
        return gone
    try:
        header = _plain(f.content(frame), bool(fields.get("zlib")))
        message = message_at(bodies, header, body.position if body is not None else None)
    except (zlib.error, FormatError):
        return gone  # it does not decompress, or its body's frame is broken
    if hashlib.sha256(message).hexdigest() != fields.get("message_sha256"):
        return gone
    sender = str((fields.get("envelope") or {}).get("sender", ""))
    row.update(writer.add(int(fields["seq"]), message, sender, float(fields.get("time", 0))))
    return "ok"


def _plain(stored: bytes, compressed: bool) -> bytes:
    return zlib.decompress(stored) if compressed else stored


def _row(seq: int, segment: int, frame: Frame, fields: dict[str, Any]) -> dict[str, Any]:
    envelope = fields.get("envelope") or {}
    return {
        "seq": seq,
        "record_hash": frame.hash,
        "message_sha256": fields.get("message_sha256", ""),
        "size": fields.get("size", 0),
        "status": "ok",
        "file": "",
        "mbox_offset": "",
        "mbox_length": "",
        "segment": segment,
        "offset": frame.offset,
        "via": envelope.get("via", ""),
        "id": envelope.get("id", ""),
        "sender": envelope.get("sender", ""),
        "recipients": " ".join(envelope.get("recipients", ())),
        "mailboxes": " ".join(envelope.get("mailboxes", ())),
        "client": envelope.get("client", ""),
        "user": envelope.get("user", ""),
        "arrival": envelope.get("arrival", ""),
    }


def _frames(log: SegmentLog, last: int) -> Iterator[tuple[int, Frame, dict[str, Any], SegmentFile]]:
    """Every record up to ``last``, in order (ExportError where the vault does not parse:
    ``vault verify`` says more).  Each segment is opened once (:class:`Bodies` keeps a twin
    of the file where a chosen body is)."""
    expected, prev = 1, GENESIS
    for number, path in log.segments():
        f = SegmentFile(path)
        try:
            for frame in f.frames(f.header().length):
                fields = frame.fields()
                if (fields.get("seq"), fields.get("prev")) != (expected, prev) or (
                    chain_hash(prev, frame.meta) != frame.hash
                ):
                    raise FormatError(f"record {expected} is not where it should be")
                yield number, frame, fields, f
                if expected == last:
                    return
                expected, prev = expected + 1, frame.hash
        except FormatError as e:
            raise ExportError(
                f"the vault is damaged in segment {number} ({e}): run `ourmail vault verify`"
            ) from None
        finally:
            f.close()
    raise ExportError(f"the vault ends before its head, record {last}: run `ourmail vault verify`")
