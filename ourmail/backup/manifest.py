"""The manifest of a backup snapshot: what it holds, written last so a snapshot without one
(an interrupted backup) is never used as a base and never restored.

A snapshot is ``DEST/<UTC time>/`` holding ``data/`` (the copy of the data folder) and
``manifest.json``::

    {"kind": "ourmail-backup", "version": 1, "complete": true, "created": "...",
     "ourmail": "0.1.0", "data_format": 1, "source": "/srv/ourmail", "shards_toml": "...",
     "dirs": {"mail": 448, ...}, "files": {"accounts.json": [size, sha256, mode], ...}}

Paths are relative to ``data/``, with ``/`` between components.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from ourmail.fsutil import write_atomic

FILE_NAME = "manifest.json"
DATA = "data"
KIND = "ourmail-backup"
VERSION = 1


class ManifestError(Exception):
    """A snapshot without a complete, readable manifest."""


@attrs.frozen
class FileEntry:
    """One file of a snapshot."""

    size: int
    sha256: str
    mode: int


@attrs.define
class Manifest:
    """What a snapshot holds."""

    created: str
    ourmail: str
    data_format: int
    source: str
    shards_toml: str = ""
    dirs: dict[str, int] = attrs.Factory(dict)
    files: dict[str, FileEntry] = attrs.Factory(dict)
    notes: list[str] = attrs.Factory(list)

    def write(self, snapshot: Path) -> None:
        """Write ``snapshot/manifest.json`` atomically (fsynced, directory too)."""
        document: dict[str, Any] = {
            "kind": KIND,
            "version": VERSION,
            "complete": True,
            "created": self.created,
            "ourmail": self.ourmail,
            "data_format": self.data_format,
            "source": self.source,
            "shards_toml": self.shards_toml,
            "notes": self.notes,
            "dirs": dict(sorted(self.dirs.items())),
            "files": {rel: [e.size, e.sha256, e.mode] for rel, e in sorted(self.files.items())},
        }
        write_atomic(snapshot / FILE_NAME, json.dumps(document, indent=0).encode(), 0o600)

    @classmethod
    def read(cls, snapshot: Path) -> Manifest:
        """The manifest of ``snapshot``; ManifestError if it has none or an incomplete one."""
        path = snapshot / FILE_NAME
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ManifestError(
                f"{snapshot} has no {FILE_NAME}: it is not a snapshot, or its backup was "
                "interrupted"
            ) from None
        except (OSError, ValueError) as e:
            raise ManifestError(f"cannot read {path}: {e}") from None
        try:
            if document["kind"] != KIND or document["complete"] is not True:
                raise ManifestError(f"{path} is not the manifest of a complete ourmail backup")
            if document["version"] > VERSION:
                raise ManifestError(
                    f"{path} is from a newer ourmail (manifest version {document['version']})"
                )
            for rel in (*document["dirs"], *document["files"]):
                _check_path(str(rel), path)
            return cls(
                created=str(document["created"]),
                ourmail=str(document["ourmail"]),
                data_format=int(document["data_format"]),
                source=str(document["source"]),
                shards_toml=str(document.get("shards_toml", "")),
                notes=[str(n) for n in document.get("notes", [])],
                dirs={str(k): int(v) for k, v in document["dirs"].items()},
                files={
                    str(rel): FileEntry(int(v[0]), str(v[1]), int(v[2]))
                    for rel, v in document["files"].items()
                },
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise ManifestError(f"{path} is damaged ({e!r})") from None


def _check_path(rel: str, manifest: Path) -> None:
    """A path inside the snapshot's ``data/``: no ``..``, not absolute (a damaged or forged
    manifest must not make a restore write elsewhere)."""
    parts = rel.split("/")
    if rel.startswith("/") or ".." in parts or (rel and "" in parts):
        raise ManifestError(f"{manifest} names the path {rel!r}, outside the snapshot")
