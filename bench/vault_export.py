"""The vault's export rate against a plain ``tar`` of the same messages (issue 18's benchmark),
and ``vault verify``'s rate.  Prints figures; asserts nothing.

    .venv/bin/python bench/vault_export.py --dir /var/tmp/vx --messages 20000

It writes N messages of mixed sizes (most a few kB of text, some with a base64 attachment
up to 1 MB, one body in ten shared) into a vault with the record writer of the tests, then
times ``vault verify``, an export of every message as mbox and as zip (each with its
manifest and proof), and ``tar cf`` of the same messages written as plain ``.eml`` files.
Rates are message octets (verify: segment octets) per second; the page cache is warm for
all of them (each reads what was just written).
"""

from __future__ import annotations

import argparse
import base64
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ourmail.vault.export import export, select
from ourmail.vault.segments import SegmentLog
from ourmail.vault.verify import verify
from tests.vault.proofhelp import capture


def message(n: int) -> bytes:
    """Message ``n``: text, and for one in four an attachment (sizes as mail has them)."""
    rng = random.Random(n - 1 if n % 10 == 0 else n)  # noqa: S311 (sample data)
    words = ("minutes", "budget", "council", "road", "school", "water", "permit", "report")
    text = " ".join(rng.choice(words) for _ in range(rng.randint(60, 1200)))
    parts = [f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"]
    if rng.random() < 0.25:
        blob = base64.encodebytes(rng.randbytes(rng.choice((20_000, 150_000, 700_000)))).decode()
        parts.append(
            "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="report{n}.pdf"\r\n\r\n{blob}'
        )
    body = "".join(f"--b\r\n{p}" for p in parts) + "--b--\r\n"
    return (
        (
            f"From: clerk{n % 50}@town.example\r\nTo: council@town.example\r\n"
            f"Subject: Item {n}\r\nMessage-ID: <i{n}@town.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            f"{body}"
        )
        .replace("\n", "\r\n")
        .replace("\r\r\n", "\r\n")
        .encode()
    )


def messages(count: int) -> Iterator[bytes]:
    return (message(n) for n in range(1, count + 1))


def timed(what: str, octets: int, work: Callable[[], object]) -> object:
    start = time.monotonic()
    result = work()
    seconds = time.monotonic() - start
    print(f"{what:<34} {octets / 1e6:9.1f} MB {seconds:8.2f} s {octets / 1e6 / seconds:8.1f} MB/s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="a folder to work in (emptied)")
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    log = SegmentLog(args.dir / "vault")
    start = time.monotonic()
    capture(log, messages(args.messages), batch=50)
    size = sum(len(m) for m in messages(args.messages))
    segments = sum(p.stat().st_size for _, p in log.segments())
    print(
        f"{args.messages} messages, {size / 1e6:.1f} MB ({segments / 1e6:.1f} MB in the vault), "
        f"written in {time.monotonic() - start:.1f} s"
    )
    if not timed("vault verify", segments, lambda: verify(log)).ok:  # type: ignore[attr-defined]
        print("the vault does NOT verify")
    chosen = select(log, everything=True)
    timed(
        "vault export --format mbox", size, lambda: export(log, chosen, "mbox", args.dir / "a.mbox")
    )
    timed("vault export --format zip", size, lambda: export(log, chosen, "zip", args.dir / "a.zip"))
    eml = args.dir / "eml"
    eml.mkdir()
    for n, data in enumerate(messages(args.messages), 1):
        (eml / f"{n}.eml").write_bytes(data)
    tar = ["tar", "cf", str(args.dir / "a.tar"), "-C", str(eml), "."]
    timed("tar cf of the same .eml files", size, lambda: subprocess.run(tar, check=True))


if __name__ == "__main__":
    main()
