"""Opening a large folder in a fresh process (what IMAP SELECT and the webmail's first list
page pay once per folder after a restart), from its checkpoint (``ourmail-index``) and, for
comparison, by folding the whole journal.  Each sample is a new Python process, so nothing is
warm but the page cache.  Prints figures; asserts nothing.

    .venv/bin/python bench/web_list.py --dir /var/tmp/wl      # makes a 100,000-message INBOX
    .venv/bin/python bench/folder_open.py /var/tmp/wl

Steps timed: opening the folder (``MaildirFolder``: the checkpoint or the fold, then the
journal's tail), the UIDs by internal date, the 50 newest messages' summaries, and the unseen
count (SELECT's UNSEEN, the folder tree's counts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from ourmail.store.checkpoint import FILE_NAME

ONE = """
import json, sys, time
from pathlib import Path
from ourmail.store.folder import MaildirFolder
t0 = time.perf_counter()
folder = MaildirFolder(Path(sys.argv[1]), "INBOX")
t1 = time.perf_counter()
newest = folder.uids_ordered("date")[-50:]
t2 = time.perf_counter()
for uid in newest:
    folder.message(uid).summary()
t3 = time.perf_counter()
folder.unseen_count()
t4 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2, t4 - t3, len(folder.uids())]))
"""
STEPS = ("open", "date order", "50 summaries", "unseen count", "total")


def sample(folder: Path) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", ONE, str(folder)], check=True, capture_output=True, text=True
    ).stdout
    *times, count = json.loads(out)
    return [t * 1000 for t in [*times, sum(times)]] + [count]


def largest_inbox(data: Path) -> Path:
    journals = sorted(data.rglob("ourmail-uidlist"), key=lambda p: p.stat().st_size)
    if not journals:
        raise SystemExit(f"no folder under {data}: run bench/web_list.py --dir first")
    return journals[-1].parent


def report(name: str, samples: list[list[float]]) -> None:
    print(f"\n{name} ({int(samples[0][-1])} messages, n={len(samples)}), median ms:")
    for i, step in enumerate(STEPS):
        print(f"  {step:14} {statistics.median(s[i] for s in samples):8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path, help="the --dir of an earlier bench/web_list.py run")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    folder = largest_inbox(args.dir / "data")
    index = folder / FILE_NAME
    sample(folder)  # writes the checkpoint if there is none yet
    report("from the checkpoint", [sample(folder) for _ in range(args.runs)])
    size = index.stat().st_size
    folded = []
    for _ in range(max(1, args.runs // 2)):
        os.rename(index, folder / "checkpoint.aside")
        try:
            folded.append(sample(folder))
        finally:
            os.replace(folder / "checkpoint.aside", index)
    report("no checkpoint: folding the whole journal, then writing one", folded)
    journal = (folder / "ourmail-uidlist").stat().st_size
    print(f"\ncheckpoint {size / 1e6:.1f} MB; journal {journal / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
