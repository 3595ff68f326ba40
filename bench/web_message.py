"""Opening a 10 MB message in the webmail (issue 16's benchmark): the time to build its view
(:func:`ourmail.web.messageview.build_view`) and the memory that costs, for three shapes of
10 MB message read from a memory map as the store hands it out, and the time and peak memory
of streaming its 7.5 MB attachment decoded.  Prints figures; asserts nothing.  Target: under
300 ms to open.

    .venv/bin/python bench/web_message.py
    .venv/bin/python bench/web_message.py --megabytes 25 --runs 9
"""

from __future__ import annotations

import argparse
import base64
import mmap
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable

from ourmail.web.attachments import open_part
from ourmail.web.messageview import build_view

HEAD = (
    b"From: =?UTF-8?B?zpzOsc+Bzq/OsQ==?= <maria@example.gr>\r\nTo: nikos@example.gr\r\n"
    b"Subject: =?UTF-8?Q?=CE=91=CE=BD=CE=B1=CF=86=CE=BF=CF=81=CE=AC?=\r\n"
    b"Date: Tue, 3 Nov 2026 09:14:02 +0200\r\nMIME-Version: 1.0\r\n"
)


def attachment_message(size: int) -> bytes:
    """A short Greek text and one base64 attachment: the common large message."""
    payload = os.urandom(size * 3 // 4)
    return (
        HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain; charset=iso-8859-7\r\n\r\n"
        + "Σας στέλνω την αναφορά.".encode("iso-8859-7")
        + b"\r\n--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=UTF-8''%CE%91.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(payload).replace(b"\n", b"\r\n")
        + b"--b--\r\n"
    )


def html_message(size: int) -> bytes:
    """One 10 MB quoted-printable HTML body (a newsletter gone wrong): cut at 1 MiB."""
    row = "<tr><td>Καλημέρα</td><td>=3D</td></tr>\r\n".encode("iso-8859-7")
    return (
        HEAD + b"Content-Type: text/html; charset=iso-8859-7\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n<table>\r\n"
        + row * (size // len(row))
        + b"</table>\r\n"
    )


def many_parts_message(size: int) -> bytes:
    """A thousand 10 KB attachments (scanned pages): the part limit's case."""
    each = size // 1000
    part = (
        b"--b\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=page.jpg\r\n\r\n"
        + base64.encodebytes(os.urandom(each * 3 // 4)).replace(b"\n", b"\r\n")
    )
    return (
        HEAD
        + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nscans\r\n'
        + part * 1000
        + b"--b--\r\n"
    )


def mapped(data: bytes) -> mmap.mmap:
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def timed(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def peak_mb(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def drain(buf: mmap.mmap, section: str) -> int:
    download = open_part(buf, section)
    assert download is not None
    return sum(len(c) for c in download.chunks())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    size = args.megabytes * 1_000_000
    print(f"{'message':<28}{'size MB':>9}{'view ms':>9}{'view peak MB':>14}")
    for name, make in (
        ("one base64 attachment", attachment_message),
        ("one quoted-printable HTML", html_message),
        ("1000 attachments", many_parts_message),
    ):
        buf = mapped(make(size))
        view_ms = timed(lambda buf=buf: build_view(buf), args.runs)
        peak = peak_mb(lambda buf=buf: build_view(buf))
        print(f"{name:<28}{len(buf) / 1e6:>9.1f}{view_ms:>9.1f}{peak:>14.2f}")
    buf = mapped(attachment_message(size))
    ms = timed(lambda: drain(buf, "2"), args.runs)
    peak = peak_mb(lambda: drain(buf, "2"))
    print(f"download of the attachment ({drain(buf, '2') / 1e6:.1f} MB decoded): "
          f"{ms:.0f} ms, peak {peak:.2f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
