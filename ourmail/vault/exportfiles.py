"""The files of a vault export, each written as it goes (docs/vault.md#verify-and-export):
the messages as mbox or zip, the manifest (CSV and JSON) and the chain proof.

* :class:`Mbox`: mboxrd (RFC 4155): per message a ``From `` line, the message with every
  line that matches ``^>*From `` given one more ``>``, and a blank line.
* :class:`Zip`: ``<seq>.eml`` per message, stored (not compressed: export runs at disk
  speed).
* :class:`Manifest`: a row per message in ``manifest.csv`` and ``manifest.json``.
* :class:`Proof`: ``proof.json``, whose first line holds the head, the signed heads and
  their certificates, then a ``[seq, prev, meta]`` line per record, then ``]}``: valid JSON
  that a checker also reads a line at a time.

Every file is made readable by its owner only: it holds mail.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
import zipfile
from pathlib import Path
from typing import IO, Any, Literal, overload

PROOF_FORMAT = "ourmail-vault-proof 1"
#: The columns of manifest.csv, and the keys of each message in manifest.json.
COLUMNS = (
    "seq",
    "record_hash",
    "message_sha256",
    "size",
    "status",
    "file",
    "mbox_offset",
    "mbox_length",
    "segment",
    "offset",
    "via",
    "id",
    "sender",
    "recipients",
    "mailboxes",
    "client",
    "user",
    "arrival",
)

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


@overload
def create(path: Path) -> IO[bytes]: ...
@overload
def create(path: Path, text: Literal[True]) -> IO[str]: ...
def create(path: Path, text: bool = False) -> IO[bytes] | IO[str]:
    """``path`` made anew for writing, readable by its owner only (it holds mail)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if text:
        return os.fdopen(fd, "w", encoding="utf-8", newline="")
    return os.fdopen(fd, "wb")


class Mbox:
    """mboxrd (RFC 4155): a ``From `` line, the message with ``>From`` quoting, a blank line."""

    def __init__(self, path: Path) -> None:
        self.file = create(path)
        self.at = 0

    def add(self, seq: int, message: bytes, sender: str, arrival: float) -> dict[str, Any]:
        # Every line to quote holds "From ": most messages have none (a fast test).
        quoted = _FROM_LINE.sub(rb">\1", message) if b"From " in message else message
        # RFC 4155: the separator is "From ", the sender, and a UTC date in asctime form.
        who = sender if sender and not any(c.isspace() for c in sender) else "MAILER-DAEMON"
        line = f"From {who} {time.asctime(time.gmtime(arrival))}\n".encode()
        tail = b"\n" if quoted.endswith(b"\n") else b"\n\n"
        self.file.write(line + quoted + tail)
        start = self.at + len(line)
        self.at = start + len(quoted) + len(tail)
        return {"mbox_offset": start, "mbox_length": len(quoted)}

    def close(self) -> None:
        self.file.close()


class Zip:
    """A zip of ``<seq>.eml`` (stored, not compressed: export runs at disk speed)."""

    def __init__(self, path: Path) -> None:
        self.file = create(path)
        self.zip = zipfile.ZipFile(self.file, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add(self, seq: int, message: bytes, sender: str, arrival: float) -> dict[str, Any]:
        name = f"{seq}.eml"
        info = zipfile.ZipInfo(name, time.gmtime(max(arrival, 315532800.0))[:6])
        info.external_attr = 0o644 << 16
        self.zip.writestr(info, message)
        return {"file": name}

    def close(self) -> None:
        self.zip.close()
        self.file.close()


class Proof:
    """proof.json, written as it goes: a first line with the head and signed heads, then a
    record per line, then ``]}`` (see the module text)."""

    def __init__(
        self,
        path: Path,
        head: tuple[int, str],
        signed: list[dict[str, Any]],
        certificates: dict[str, str],
    ) -> None:
        self.file = create(path, text=True)
        opening = {
            "format": PROOF_FORMAT,
            "head": {"seq": head[0], "hash": head[1]},
            "signed_heads": signed,
            "certificates": certificates,
        }
        text = json.dumps(opening, sort_keys=True, separators=(",", ":"))
        self.file.write(text[:-1] + ',"records":[')
        self.first = True

    def add(self, seq: int, prev: str, meta: bytes) -> None:
        entry = json.dumps([seq, prev, meta.decode()], ensure_ascii=False, separators=(",", ":"))
        self.file.write(("\n" if self.first else ",\n") + entry)
        self.first = False

    def close(self) -> None:
        self.file.write("\n]}\n")
        self.file.close()


class Manifest:
    """manifest.csv and manifest.json, a row at a time."""

    def __init__(self, csv_path: Path, json_path: Path, opening: dict[str, Any]) -> None:
        self.csv_file = create(csv_path, text=True)
        self.csv = csv.DictWriter(self.csv_file, COLUMNS)
        self.csv.writeheader()
        self.json_file = create(json_path, text=True)
        text = json.dumps(opening, sort_keys=True, separators=(",", ":"))
        self.json_file.write(text[:-1] + ',"messages":[')
        self.first = True

    def add(self, row: dict[str, Any]) -> None:
        self.csv.writerow({k: row.get(k, "") for k in COLUMNS})
        entry = json.dumps(row, sort_keys=True, ensure_ascii=False)
        self.json_file.write(("\n" if self.first else ",\n") + entry)
        self.first = False

    def close(self) -> None:
        self.json_file.write("\n]}\n")
        self.json_file.close()
        self.csv_file.close()
