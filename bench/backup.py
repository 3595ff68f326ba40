"""``ourmail backup`` at size: a full snapshot, an incremental one with nothing changed and
one after 100 new messages, against ``cp -a`` and ``rsync -a`` of the same data folder.
Prints figures; asserts nothing.

    .venv/bin/python bench/backup.py --dir /var/tmp/bb --messages 20000 --users 20

The data folder is made once (messages written straight into the users' Maildirs, journals
built by opening each folder) and reused on later runs; the backups are made afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from ourmail.backup import backup
from ourmail.store.folder import MaildirFolder
from ourmail.store.shards import DEFAULT_SHARDS_TOML, ShardMap


def message(n: int, size: int) -> bytes:
    head = f"From: s{n}@else.test\r\nTo: u@example.test\r\nSubject: message {n}\r\n\r\n"
    line = f"line of message {n} ".ljust(76, "x") + "\r\n"
    return (head + line * max(1, (size - len(head)) // len(line))).encode()


def make(data: Path, messages: int, users: int, size: int) -> list[Path]:
    data.mkdir(parents=True, exist_ok=True)
    (data / "shards.toml").write_text(DEFAULT_SHARDS_TOML)
    if not (data / "accounts.json").exists():
        accounts = {"users": {f"u{k}@example.test": {"password": "x"} for k in range(users)}}
        (data / "accounts.json").write_text(json.dumps(accounts))
    shards = ShardMap(data)
    folders = [shards.user_dir(f"u{k}@example.test") for k in range(users)]
    for k, folder in enumerate(folders):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        if any((folder / "new").iterdir()):
            continue
        for n in range(k, messages, users):
            body = message(n, size)
            (folder / "new" / f"1800000000.M{n}P1.bench,S={len(body)}").write_bytes(body)
        MaildirFolder(folder, "INBOX")  # builds the journal
    return folders


def add(folder: Path, start: int, count: int, size: int) -> None:
    """``count`` new messages (new names on every run: the data folder is kept)."""
    now = int(time.time())
    for n in range(start, start + count):
        body = message(n, size)
        (folder / "new" / f"{now}.M{n}P{os.getpid()}.bench,S={len(body)}").write_bytes(body)
    MaildirFolder(folder, "INBOX").sync(force=True)


def rate(what: str, files: int, octets: int, seconds: float) -> None:
    print(f"{what:<34} {seconds:7.2f} s  {octets / 1e6 / seconds:8.1f} MB/s  "
          f"{files / seconds:9.0f} files/s  ({files} files, {octets / 1e6:.1f} MB)")  # fmt: skip


def timed(args: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(args, check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="a work folder, kept")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    data = args.dir / "data"
    folders = make(data, args.messages, args.users, args.size)
    dest = args.dir / "backups"
    shutil.rmtree(dest, ignore_errors=True)
    os.sync()
    full = backup.run(data, dest)
    c = full.counts
    rate("ourmail backup, full", c.copied + c.linked, c.bytes_total, full.seconds)
    same = backup.run(data, dest)
    c = same.counts
    rate("ourmail backup, nothing changed", c.copied + c.linked, c.bytes_total, same.seconds)
    print(f"{'':<34} copied {c.copied}, linked {c.linked}")
    add(folders[0], args.messages, 100, args.size)
    more = backup.run(data, dest)
    c = more.counts
    rate("ourmail backup, 100 new messages", c.copied + c.linked, c.bytes_total, more.seconds)
    print(f"{'':<34} copied {c.copied} ({c.bytes_copied / 1e6:.2f} MB), linked {c.linked}")
    files = c.copied + c.linked
    copy = args.dir / "cp"
    shutil.rmtree(copy, ignore_errors=True)
    os.sync()
    rate("cp -a", files, c.bytes_total, timed(["cp", "-a", str(data), str(copy)]))
    shutil.rmtree(copy)
    if shutil.which("rsync"):
        os.sync()
        rate("rsync -a, full", files, c.bytes_total,
             timed(["rsync", "-a", f"{data}/", f"{copy}/"]))  # fmt: skip
        linked = args.dir / "rsync-linked"
        shutil.rmtree(linked, ignore_errors=True)
        rate("rsync -a --link-dest, no change", files, c.bytes_total,
             timed(["rsync", "-a", f"--link-dest={copy}", f"{data}/", f"{linked}/"]))  # fmt: skip
        shutil.rmtree(copy)
        shutil.rmtree(linked)
    else:
        print("rsync: not installed")


if __name__ == "__main__":
    main()
