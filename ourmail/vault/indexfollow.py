"""The search index kept in step from a process of its own (docs/vault.md#search).

The server starts ``python -m ourmail.vault.indexfollow VAULT [--root R …] [--segment-size N]``
with a pipe on its standard input.  It catches the index up with the segments, then again
whenever the vault's ``head`` has moved (looked at every :data:`INTERVAL` seconds), until its
standard input closes: the server has stopped, or died.  It runs at a lower priority
(``nice``), so indexing takes what CPU intake leaves and never the serving process's
interpreter: parsing and indexing cost about 0.6 ms a message (docs/performance.md).

Catch-ups hold the index's ``flock`` (``ourmail/vault/indexer.py``), so the console's own
catch-up before a search and ``ourmail vault search`` never index a record twice.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ourmail.vault.index import IndexError_, SQLiteIndex
from ourmail.vault.indexer import Indexer
from ourmail.vault.segments import SEGMENT_SIZE, SegmentLog

#: Seconds between looks at the vault's head.
INTERVAL = 0.5
#: How much lower than the server's this process's priority is.
NICENESS = 10


def arguments(vault: Path, roots: Sequence[Path], segment_size: int) -> list[str]:
    """The command line that starts this follower for a vault."""
    args = [sys.executable, "-m", "ourmail.vault.indexfollow", str(vault)]
    for root in roots:
        args += ["--root", str(root)]
    return [*args, "--segment-size", str(segment_size)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ourmail.vault.indexfollow")
    parser.add_argument("vault", type=Path)
    parser.add_argument("--root", type=Path, action="append", default=[])
    parser.add_argument("--segment-size", type=int, default=SEGMENT_SIZE)
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    log = SegmentLog(args.vault, args.root, args.segment_size)
    try:
        indexer = Indexer(log, SQLiteIndex(args.vault / "index.sqlite"))
    except IndexError_ as e:
        print(f"the vault is kept but cannot be searched: {e}", file=sys.stderr)
        return 1
    gone = threading.Event()

    def watch() -> None:
        sys.stdin.buffer.read()  # returns at end of file: the server is gone
        gone.set()

    threading.Thread(target=watch, daemon=True).start()
    done = -1
    while not gone.is_set():
        head = log.head()[0]
        if head != done:
            try:
                indexer.catch_up()
                done = head
            except Exception as e:
                print(f"the vault's search index could not catch up: {e}", file=sys.stderr)
        gone.wait(INTERVAL)
    indexer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
