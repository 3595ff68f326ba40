"""``ourmail restore SNAPSHOT DATA_DIR``: a snapshot back into a new data folder.

Only into an empty or absent folder, only from a snapshot with a complete manifest, only a
format this ourmail knows (an older one is upgraded at the server's next start).  Every file
is checked against the manifest's size and sha256 while it is copied, gets the mode it had
(secrets never more than 0600), and everything is fsynced before the command says it is done.
A snapshot keeps every shard in ``mail/``; ``shard_roots`` (``--shard-root 80-ff=/srv/mail2``)
puts ranges of shards on other volumes, and ``shards.toml`` is written to match.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import attrs

from ourmail.backup import dataformat
from ourmail.backup.backup import latest, sync_tree
from ourmail.backup.manifest import DATA, Manifest, ManifestError
from ourmail.fsutil import fsync_dir, write_atomic
from ourmail.store.shards import DEFAULT_ROOT
from ourmail.store.shards import FILE_NAME as SHARDS_FILE

CHUNK = 1024 * 1024
#: A shard's folder in ``mail/``: two hex digits.
SHARD = re.compile(r"[0-9a-f]{2}")
#: In the data folder while a restore writes it: the server and the commands refuse it.
INCOMPLETE = dataformat.RESTORE_INCOMPLETE
#: Files that hold secrets: never readable by others, whatever the snapshot says.
SECRETS = ("accounts.json",)
SECRET_NAMES = ("secret", "key.pem")
SECRET_FOLDERS = ("dkim/",)


class RestoreError(Exception):
    """A restore that cannot be done (printed as one line)."""


@attrs.frozen
class ShardRoot:
    """Shards ``first``-``last`` restored into ``root`` instead of ``<data>/mail``."""

    first: int
    last: int
    root: Path

    @classmethod
    def parse(cls, text: str) -> ShardRoot:
        """``80-ff=/srv/mail2`` (hex shard numbers)."""
        span, equals, root = text.partition("=")
        first, _, last = span.partition("-")
        try:
            lo, hi = int(first, 16), int(last or first, 16)
        except ValueError:
            lo, hi = -1, -1
        if not equals or not root or not 0 <= lo <= hi <= 255 or not Path(root).is_absolute():
            raise RestoreError(
                f"--shard-root {text!r}: give RANGE=/absolute/path, e.g. 80-ff=/srv/mail2"
            )
        return cls(lo, hi, Path(root))


@attrs.frozen
class Restored:
    files: int
    bytes: int

    def summary(self, target: Path) -> str:
        return f"restored {self.files} files ({self.bytes / 1e6:.1f} MB) into {target}"


def restore(snapshot: Path, target: Path, shard_roots: Sequence[ShardRoot] = ()) -> Restored:
    """Copy ``snapshot`` into the new data folder ``target``."""
    try:
        manifest = Manifest.read(snapshot)
    except ManifestError as e:
        inside = latest(snapshot)
        if inside:
            raise RestoreError(
                f"{snapshot} is a backup folder: name one of its snapshots (the latest is "
                f"{inside[0]})"
            ) from None
        raise RestoreError(str(e)) from None
    for rel in (*manifest.dirs, *manifest.files):
        parts = rel.split("/")
        if parts[0] == DEFAULT_ROOT and len(parts) > 1 and not SHARD.fullmatch(parts[1]):
            raise RestoreError(f"the manifest of {snapshot} names {rel!r}, in no shard (damaged?)")
    if manifest.data_format > dataformat.CURRENT:
        raise RestoreError(dataformat.too_new(snapshot, manifest.data_format))
    if (target / INCOMPLETE).exists():
        raise RestoreError(
            f"an earlier restore into {target} was interrupted: empty it and restore again"
        )
    if target.exists() and (not target.is_dir() or not _empty(target)):
        raise RestoreError(f"{target} is not empty: restore only into a new or empty folder")
    for mapping in shard_roots:
        if not mapping.root.is_dir():
            raise RestoreError(
                f"--shard-root: {mapping.root} is not a folder (is the volume mounted?)"
            )
    source = snapshot / DATA
    roots = [target / DEFAULT_ROOT] * 256
    for mapping in shard_roots:
        for n in range(mapping.first, mapping.last + 1):
            roots[n] = mapping.root

    def where(rel: str) -> Path:
        parts = rel.split("/")
        if parts[0] == DEFAULT_ROOT and len(parts) > 1:
            return roots[int(parts[1], 16)].joinpath(*parts[1:])
        return target.joinpath(*[p for p in parts if p])

    for rel in manifest.dirs:
        if where(rel).exists() and rel.startswith(f"{DEFAULT_ROOT}/"):
            raise RestoreError(f"{where(rel)} exists already: choose an empty shard root")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    marker = target / INCOMPLETE
    marker.write_text(f"restoring {snapshot}: empty this folder and restore again\n")
    fsync_dir(target)
    for rel, mode in sorted(manifest.dirs.items()):
        path = where(rel)
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    total = 0
    for rel, entry in manifest.files.items():
        mode = entry.mode
        if rel in SECRETS or rel.endswith(SECRET_NAMES) or rel.startswith(SECRET_FOLDERS):
            mode &= 0o600
        _copy(source / rel, where(rel), entry.size, entry.sha256, mode)
        total += entry.size
    if shard_roots:
        _write_shards(target, roots)
    for root in {*roots, target}:
        sync_tree(root)
        fsync_dir(root)
    marker.unlink()
    fsync_dir(target)
    return Restored(len(manifest.files), total)


def _empty(folder: Path) -> bool:
    """Nothing in ``folder`` but, at the root of a new file system, its empty ``lost+found``."""
    for entry in folder.iterdir():
        if entry.name != "lost+found" or not entry.is_dir() or any(entry.iterdir()):
            return False
    return True


def _copy(source: Path, target: Path, size: int, sha256: str, mode: int) -> None:
    digest = hashlib.sha256()
    written = 0
    try:
        src = os.open(source, os.O_RDONLY)
    except FileNotFoundError:
        raise RestoreError(f"the snapshot lacks {source} (damaged?)") from None
    try:
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while chunk := os.read(src, CHUNK):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                written += len(chunk)
            os.fchmod(out, mode)
            st = os.fstat(src)
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
    finally:
        os.close(src)
    if written != size or digest.hexdigest() != sha256:
        raise RestoreError(f"{source} does not match the manifest (damaged snapshot)")


def _write_shards(target: Path, roots: list[Path]) -> None:
    """``shards.toml`` for ``roots`` (runs of shards with the same root, one entry each)."""
    lines = ["# Written by `ourmail restore`: shard ranges and the folders that hold them.\n"]
    start = 0
    for n in range(1, 257):
        if n == 256 or roots[n] != roots[start]:
            root = DEFAULT_ROOT if roots[start] == target / DEFAULT_ROOT else str(roots[start])
            lines.append(f'[[shard]]\nrange = "{start:02x}-{n - 1:02x}"\nroot = "{root}"\n')
            start = n
    write_atomic(target / SHARDS_FILE, "".join(lines).encode(), 0o640)
