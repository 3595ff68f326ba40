#!/usr/bin/env python3
"""Check an ourmail vault export without ourmail: Python's standard library only.

    python3 vault-verify.py EXPORT.zip
    python3 vault-verify.py EXPORT.mbox      (with EXPORT.mbox.manifest.csv, .json, .proof.json)

It checks that manifest.csv and manifest.json list the same messages; that each message's
SHA-256 and size are the manifest's and the ones its capture record in the proof holds;
that the proof's records form one hash chain, each record's hash being
sha256(previous hash + metadata) (docs/vault-format.md), from before the first exported
message to the head, with each message's capture record in it under the manifest's hash;
and that every signed head in the proof names a record of that chain (its signature can
be checked with openssl and the certificate the proof holds: docs/vault.md).  A message
listed as ``expired`` (retention removed its content) is accepted only when an ``expire``
record in the proof names it; one listed as ``damaged``, or with any other status, makes
the export NOT OK.

It prints OK and what it checked, or each problem found, and exits 0 or 1.
"""

import csv
import hashlib
import io
import json
import re
import sys
import zipfile
import zlib

GENESIS = "0" * 64
FROM_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)


class Export:
    """The files of an export, from a zip or beside an mbox."""

    def __init__(self, path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None

    def open(self, name):
        if self.zip is not None:
            return io.TextIOWrapper(self.zip.open(name), encoding="utf-8", newline="")
        return open(f"{self.path}.{name}", encoding="utf-8", newline="")

    def message(self, row):
        if self.zip is not None:
            return self.zip.read(row["file"])
        with open(self.path, "rb") as f:
            f.seek(int(row["mbox_offset"]))
            quoted = f.read(int(row["mbox_length"]))
        return FROM_QUOTED.sub(rb"\1", quoted)  # undo mboxrd's quoting (RFC 4155)


def same(csv_row, json_row):
    return all(str(json_row.get(k, "")) == v for k, v in csv_row.items())


def check(path):
    problems = []
    export = Export(path)
    with export.open("manifest.csv") as f:
        rows = list(csv.DictReader(f))
    with export.open("manifest.json") as f:
        manifest = json.load(f)
    listed = manifest["messages"]
    if len(rows) != len(listed):
        problems.append("manifest.csv and manifest.json list different numbers of messages")
    for row, entry in zip(rows, listed, strict=False):
        if not same(row, entry):
            problems.append(f"message {row['seq']}: manifest.csv and manifest.json differ")
    by_seq = {int(row["seq"]): row for row in rows}
    hashes = {}
    expired = set()
    with export.open("proof.json") as f:
        opening = json.loads(f.readline().rstrip() + "]}")
        head = opening["head"]
        signed = {int(h["seq"]): h for h in opening.get("signed_heads", [])}
        seq, digest, records = None, None, 0
        for line in f:
            line = line.rstrip().removesuffix(",")
            if line == "]}":
                break
            entry_seq, prev, meta_text = json.loads(line)
            meta = meta_text.encode("utf-8")
            fields = json.loads(meta)
            if fields.get("seq") != entry_seq or fields.get("prev") != prev:
                problems.append(f"proof record {entry_seq}: its metadata says otherwise")
            if seq is not None and (entry_seq != seq + 1 or prev != digest):
                problems.append(f"proof record {entry_seq} does not follow record {seq}")
            if seq is None and entry_seq == 1 and prev != GENESIS:
                problems.append("proof record 1 does not start the chain")
            seq = entry_seq
            digest = hashlib.sha256(bytes.fromhex(prev) + meta).hexdigest()
            records += 1
            if fields.get("kind") == "expire":
                expired.update(fields.get("records", ()))
            if seq in by_seq:
                hashes[seq] = (digest, fields)
            if seq in signed and signed[seq]["hash"] != digest:
                problems.append(f"the head signed at {signed[seq]['time']} is not in the chain")
    if manifest.get("head") != head:
        problems.append("manifest.json names another head than the proof")
    if seq != head["seq"]:
        problems.append(f"the proof's chain ends at record {seq}, not at its head {head['seq']}")
    elif digest != head["hash"]:
        problems.append(f"the proof's chain does not reach its head's hash {head['hash']}")
    shown, gone = 0, 0
    for number, row in sorted(by_seq.items()):
        if number not in hashes:
            problems.append(f"message {number} is not in the proof's chain")
            continue
        digest, fields = hashes[number]
        if row["record_hash"] != digest or fields.get("kind") != "capture":
            problems.append(f"message {number}: its record hash is not the chain's")
        if row["message_sha256"] != fields.get("message_sha256"):
            problems.append(f"message {number}: the manifest's sha256 is not the vault's")
        if row["status"] == "expired" and number in expired:
            gone += 1
            continue
        if row["status"] == "expired":
            problems.append(
                f"message {number} is listed as expired, but no expire record in the proof names it"
            )
            continue
        if row["status"] != "ok":
            problems.append(f"message {number} is listed as {row['status']!r}, not ok")
            continue
        message = export.message(row)
        if hashlib.sha256(message).hexdigest() != fields.get("message_sha256"):
            problems.append(f"message {number} ({row['file'] or 'mbox'}) has been changed")
        elif len(message) != int(row["size"]):
            problems.append(f"message {number}: its size is not the manifest's")
        shown += 1
    return problems, shown, gone, records, head


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: vault-verify.py EXPORT.zip | EXPORT.mbox", file=sys.stderr)
        return 2
    try:
        problems, shown, gone, records, head = check(argv[1])
    except (
        OSError,
        EOFError,
        LookupError,
        ValueError,
        TypeError,
        zipfile.BadZipFile,
        zlib.error,
    ) as e:
        print(f"NOT OK: the export cannot be read: {e!r}")
        return 1
    for problem in problems:
        print(f"NOT OK: {problem}")
    if problems:
        return 1
    print(
        f"OK: {shown} messages match the manifest and their capture records, in a chain of "
        f"{records} records to head {head['seq']} {head['hash']}; {gone} expired (their "
        "content removed, as an expire record in the proof says), none skipped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
