"""``ourmail backup DEST``: a consistent snapshot of a data folder while the server runs.

Each run writes ``DEST/<UTC time>.partial/``, then its manifest (manifest.py), then renames it
to ``DEST/<UTC time>/``: a folder without ``.partial`` and with a manifest is complete, and
only such a folder is used as the base of the next run (writer.py links its unchanged files).

Each part of the data folder is taken the way its writers allow (docs/deploy.md), in an
order where whatever records another part is copied before that part (so it may lag behind
it, as after a crash, but never run ahead of it):

1. every file not named below: SQLite databases with SQLite's online backup API (the lists'
   database before the queue it queues into, the vault's catalogue and index before its
   segments), the others read whole from one descriptor (they are replaced by rename, so
   that is one version of them);
2. the vault, under its lock: the segments' lengths at that moment (records are written
   before the messages they describe, so every message copied later has its record); sealed
   segments never change and are linked from the base; the copied chain is verified with
   the vault's own verifier;
3. each mailbox's Maildir folders under their locks, all at one moment (folders.py), on every
   shard root, all into ``mail/``;
4. the outbound queue under its lock: the envelopes then, and the messages they name (a
   message sent and removed meanwhile is left out with its envelope).

Left out: lock files, sockets, SQLite's side files, temporary files, ``spool/`` (messages not
yet acknowledged), ``metrics/``, ``listening.json`` (the running server's ports),
``pre-upgrade/`` (upgrade.py's own backups) and ``lost+found/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs

from ourmail import __version__
from ourmail.backup import dataformat, folders
from ourmail.backup.manifest import DATA, Manifest, ManifestError
from ourmail.backup.writer import Counts, SnapshotWriter
from ourmail.fdlimit import raise_open_file_limit
from ourmail.fsutil import HAVE_SYNCFS, fsync_dir, fsync_file, syncfs
from ourmail.store import shardmove
from ourmail.store.shards import DEFAULT_ROOT, DEFAULT_SHARDS_TOML, ShardMap
from ourmail.store.shards import FILE_NAME as SHARDS_FILE

PARTIAL = ".partial"
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Top-level entries never copied: not data, or not yet acknowledged (``lost+found``: a data
#: folder at the root of its own file system; root's, unreadable by the server's user).
SKIP_TOP = frozenset(
    ("spool", "metrics", "lmtp.sock", "listening.json", "pre-upgrade", "lost+found")
)
#: The snapshots an upgrade makes first (upgrade.py): the one place inside the data folder a
#: backup may go, so it works where only the data folder is writable (systemd, containers).
UPGRADE_BACKUPS = "pre-upgrade"
#: File names never copied anywhere.
SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".lock", ".tmp")


class BackupError(Exception):
    """A backup that cannot be made (printed as one line)."""


@attrs.frozen
class Result:
    """A finished snapshot and what making it took."""

    path: Path
    counts: Counts
    seconds: float
    base: Path | None
    vault: str
    #: False when the copied vault chain was checked and does not verify.
    vault_ok: bool = True

    def summary(self) -> str:
        c = self.counts
        return (
            f"snapshot {self.path}: {c.copied} files copied ({_mb(c.bytes_copied)}), "
            f"{c.linked} linked from {self.base.name if self.base else 'no earlier snapshot'}, "
            f"{_mb(c.bytes_total)} in all, {self.seconds:.2f} s; vault: {self.vault}"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _candidates(dest: Path) -> list[Path]:
    """The folders of ``dest`` that may be snapshots (not ``.partial``), oldest first."""
    if not dest.is_dir():
        return []
    return [e for e in sorted(dest.iterdir()) if e.is_dir() and not e.name.endswith(PARTIAL)]


def snapshots(dest: Path) -> list[Path]:
    """The complete snapshots in ``dest``, oldest first (every manifest is read)."""
    found = []
    for entry in _candidates(dest):
        with contextlib.suppress(ManifestError):
            Manifest.read(entry)
            found.append(entry)
    return found


def latest(dest: Path) -> tuple[Path, Manifest] | None:
    """The newest complete snapshot in ``dest`` and its manifest; the older ones' manifests
    (a year of daily runs: hundreds of thousands of entries each) are not read."""
    for entry in reversed(_candidates(dest)):
        with contextlib.suppress(ManifestError):
            return entry, Manifest.read(entry)
    return None


@contextlib.contextmanager
def _dest_lock(dest: Path) -> Iterator[None]:
    fd = os.open(dest / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup into {dest} is running") from None
        yield
    finally:
        os.close(fd)


def run(
    data_dir: Path,
    dest: Path,
    vault_roots: Sequence[Path] = (),
    known: int = dataformat.CURRENT,
    verify_vault: bool = True,
) -> Result:
    """Write a new snapshot of ``data_dir`` into ``dest`` (created if needed); a data folder
    of a format newer than ``known`` is refused.  ``verify_vault``: check the copied vault
    chain (it reads the whole copy)."""
    if not (data_dir / "accounts.json").exists() and not (data_dir / SHARDS_FILE).exists():
        raise BackupError(f"{data_dir} is not an ourmail data folder")
    version = dataformat.read(data_dir)
    if version is not None and version > known:
        raise BackupError(dataformat.too_new(data_dir, version, known))
    data_dir, dest = data_dir.resolve(), dest.resolve()  # symbolic links followed
    if dest != data_dir / UPGRADE_BACKUPS and (dest == data_dir or data_dir in dest.parents):
        raise BackupError(f"{dest} is inside the data folder {data_dir}: choose another place")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    raise_open_file_limit()  # a mailbox's folders are taken at one moment, 3 fds each
    with _dest_lock(dest):
        for stale in dest.glob(f"*{PARTIAL}"):
            shutil.rmtree(stale)  # an interrupted run: never a base, never restored
        return _run(data_dir, dest, tuple(vault_roots), version or dataformat.CURRENT, verify_vault)


def _run(
    data_dir: Path, dest: Path, vault_roots: tuple[Path, ...], version: int, verify_vault: bool
) -> Result:
    started = time.monotonic()
    newest = latest(dest)
    base = newest[0] if newest else None
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    while (dest / name).exists():
        name = f"{name}-{time.monotonic_ns() % 1000:03d}"
    final = dest / name
    partial = dest / f"{name}{PARTIAL}"
    partial.mkdir(mode=0o700)
    writer = SnapshotWriter(
        partial / DATA,
        newest[1] if newest else None,
        base / DATA if base else None,
    )
    writer.mkdir("", os.stat(data_dir).st_mode)
    # Records of what was queued (the lists' database) before the queue, the vault's
    # catalogue and index before its segments: each may then lag behind what it describes,
    # which it catches up with, never run ahead of it.
    _copy_rest(writer, data_dir, Path(""))
    vault, vault_ok = _copy_vault(writer, data_dir, vault_roots, verify_vault)
    shards_toml = _copy_mail(writer, data_dir)
    _copy_queue(writer, data_dir)
    sync_tree(partial)
    manifest = Manifest(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        ourmail=__version__,
        data_format=version,
        source=str(data_dir),
        shards_toml=shards_toml,
        dirs=writer.dirs,
        files=writer.files,
        notes=[f"vault: {vault}"],
    )
    manifest.write(partial)
    os.rename(partial, final)
    fsync_dir(dest)
    return Result(final, writer.counts, time.monotonic() - started, base, vault, vault_ok)


def sync_tree(root: Path) -> None:
    """Make every file and folder written under ``root`` durable."""
    if HAVE_SYNCFS:
        syncfs(root)
        return
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(folder, name))
        fsync_dir(folder)


# -- the vault --------------------------------------------------------------------------------


def _copy_vault(
    writer: SnapshotWriter, data_dir: Path, roots: tuple[Path, ...], check: bool
) -> tuple[str, bool]:
    """The vault into the snapshot: what was done, and False if its copy does not verify."""
    from ourmail.vault.segments import SegmentLog, segment_name
    from ourmail.vault.verify import verify

    vault = data_dir / "vault"
    if not vault.is_dir():
        return "none", True
    log = SegmentLog(vault, roots)
    _copy_rest(writer, data_dir, Path("vault"), skip=frozenset(("segments", "head", "lock")))
    writer.mkdir("vault/segments")
    opened: list[tuple[str, int, int, int]] = []
    with folders.locked(vault / "lock"):
        for number, path in log.segments():
            seg = os.open(path, os.O_RDONLY)
            st = os.fstat(seg)
            opened.append((segment_name(number), seg, st.st_size, st.st_mode))
        head = (vault / "head").read_bytes() if (vault / "head").exists() else None
    try:
        last = len(opened) - 1
        for i, (name, seg, size, mode) in enumerate(opened):
            rel = f"vault/segments/{name}"
            writer.put_fd(rel, seg, size, mode, key=rel if i < last else None)
    finally:
        for _, seg, _, _ in opened:
            os.close(seg)
    if head is not None:
        writer.put_bytes("vault/head", head, 0o600)
    if not check:
        return f"{len(opened)} segments copied, not verified", True
    report = verify(SegmentLog(writer.root / "vault"))
    if not report.ok:
        return f"the copied chain does NOT verify: {report.summary()}", False
    return f"chain verified ({report.summary()})", True


# -- mail -------------------------------------------------------------------------------------


def _copy_mail(writer: SnapshotWriter, data_dir: Path) -> str:
    """Every shard, from whichever root holds it, into ``mail/``; the original shards.toml
    (returned, for the manifest) is replaced by one with every shard in ``mail/``.  Not
    while ``ourmail shard move`` moves shards: their folders change roots meanwhile."""
    path = data_dir / SHARDS_FILE
    before = _stamp(path)
    if (data_dir / shardmove.MARKER).exists():
        raise BackupError("shards are being moved (ourmail shard move): back up after the move")
    shard_map = ShardMap(data_dir)
    writer.mkdir(DEFAULT_ROOT)
    for number, root in enumerate(shard_map.roots):
        shard = root / f"{number:02x}"
        if shard.is_dir():
            _copy_tree(writer, shard, f"{DEFAULT_ROOT}/{number:02x}")
    if _stamp(path) != before or (data_dir / shardmove.MARKER).exists():
        raise BackupError("shards were moved during the backup (ourmail shard move): run it again")
    original = path.read_text("utf-8") if path.exists() else DEFAULT_SHARDS_TOML
    writer.put_bytes(SHARDS_FILE, DEFAULT_SHARDS_TOML.encode(), 0o640)
    return original


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def _copy_tree(writer: SnapshotWriter, path: Path, rel: str, taken: bool = False) -> None:
    """A tree of users' Maildirs: folders by folders.py (a mailbox's folders all at one
    moment), anything else as a file.  A folder renamed while its siblings are copied turns
    up under its new name when the listing is read again, so it is never missed (at worst it
    is in the snapshot under both names).  ``taken``: the folder at ``path`` is copied."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    is_folder = folders.is_folder(path)
    copied: set[Path] = set()
    if is_folder and not taken:
        group = [(path, rel), *_subfolders(path, rel)]
        copied = folders.copy_folders(writer, group)
        if path not in copied:
            return
    elif not is_folder:
        writer.mkdir(rel, mode)
    done: set[str] = set(folders.HANDLED) if is_folder else set()
    while True:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except FileNotFoundError:
            return
        todo = [e for e in entries if e.name not in done and not _skipped(e.name)]
        if not todo:
            return
        for entry in todo:
            done.add(entry.name)
            if entry.is_dir(follow_symlinks=False):
                child = Path(entry.path)
                _copy_tree(writer, child, f"{rel}/{entry.name}", taken=child in copied)
            elif entry.is_file(follow_symlinks=False):
                writer.put_path(f"{rel}/{entry.name}", Path(entry.path))


def _subfolders(path: Path, rel: str) -> list[tuple[Path, str]]:
    """The Maildir++ folders of the mailbox at ``path`` (its sub-folders ``.Name``)."""
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    return [
        (Path(e.path), f"{rel}/{e.name}")
        for e in entries
        if e.name not in folders.HANDLED
        and not _skipped(e.name)
        and e.is_dir(follow_symlinks=False)
        and folders.is_folder(Path(e.path))
    ]


def _skipped(name: str) -> bool:
    return name.endswith(SKIP_SUFFIXES) or name == "lock" or name.startswith(".~")


# -- the queue --------------------------------------------------------------------------------


def _copy_queue(writer: SnapshotWriter, data_dir: Path) -> None:
    queue = data_dir / "queue"
    if not queue.is_dir():
        return
    for sub in ("messages", "envelopes", "keys"):
        writer.mkdir(f"queue/{sub}")
    envelopes: dict[str, list[tuple[str, bytes, int]]] = {}
    keys: list[tuple[str, bytes, int]] = []
    with folders.locked(queue / "lock"):
        for entry in _listing(queue / "envelopes"):
            qid = entry.name.partition(".")[0]
            if entry.name.endswith((".json", ".results")):
                envelopes.setdefault(qid, []).append(_read(entry))
        keys = [_read(e) for e in _listing(queue / "keys")]
    for qid, files in envelopes.items():
        if not any(name.endswith(".json") for name, _, _ in files):
            continue  # results of a message no longer queued
        rel = f"queue/messages/{qid}"
        if not writer.put_path(rel, queue / "messages" / qid, key=rel):
            continue  # sent and removed since: it left the queue
        for name, data, mode in files:
            writer.put_bytes(f"queue/envelopes/{name}", data, mode)
    for name, data, mode in keys:
        writer.put_bytes(f"queue/keys/{name}", data, mode)
    _copy_rest(writer, data_dir, Path("queue"), skip=frozenset(("messages", "envelopes", "keys")))


def _listing(folder: Path) -> list[os.DirEntry[str]]:
    try:
        return [e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def _read(entry: os.DirEntry[str]) -> tuple[str, bytes, int]:
    with open(entry.path, "rb") as f:
        return entry.name, f.read(), os.fstat(f.fileno()).st_mode


# -- everything else --------------------------------------------------------------------------


def _copy_rest(
    writer: SnapshotWriter, data_dir: Path, rel: Path, skip: frozenset[str] = frozenset()
) -> None:
    """The files under ``data_dir/rel`` not taken care of above."""
    here = data_dir / rel
    try:
        entries = sorted(os.scandir(here), key=lambda e: e.name)
    except FileNotFoundError:
        return
    writer.mkdir(rel.as_posix() if rel.parts else "", os.stat(here).st_mode)
    taken = {"vault", "queue", DEFAULT_ROOT, SHARDS_FILE, *SKIP_TOP} if not rel.parts else skip
    roots = {r for r in ShardMap(data_dir).roots} if not rel.parts else set()
    for entry in entries:
        path = Path(entry.path)
        child = rel / entry.name
        if entry.name in taken or _skipped(entry.name) or path in roots:
            continue
        if entry.is_dir(follow_symlinks=False):
            _copy_rest(writer, data_dir, child)
        elif entry.is_file(follow_symlinks=False):
            _copy_file(writer, path, child.as_posix())


def _copy_file(writer: SnapshotWriter, path: Path, rel: str) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
            st = os.fstat(f.fileno())
    except FileNotFoundError:
        return
    if magic != SQLITE_MAGIC or st.st_size == 0:
        writer.put_path(rel, path)
        return
    copy = writer.root / f"{rel}.backup-tmp"
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)  # SQLite's online backup: one consistent version
        finally:
            target.close()
            source.close()
    except sqlite3.Error as e:
        copy.unlink(missing_ok=True)
        raise BackupError(f"cannot copy the SQLite database {path}: {e}") from None
    try:
        os.chmod(copy, stat.S_IMODE(st.st_mode))
        writer.put_path(rel, copy)
    finally:
        copy.unlink(missing_ok=True)
