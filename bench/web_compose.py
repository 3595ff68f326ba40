"""Sending a large message from the webmail: the time and peak Python memory of taking a
25 MB attachment upload to disk (:class:`ourmail.web.uploads.Uploads`) and of writing the
message with it as MIME (:func:`ourmail.web.mimebuild.write_message`, base64 streamed from
the file).  Prints figures; asserts nothing.  Memory should stay a small constant, not grow
with the attachment.

    .venv/bin/python bench/web_compose.py
    .venv/bin/python bench/web_compose.py --megabytes 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from ourmail.web.mimebuild import Outgoing, Part, write_message
from ourmail.web.uploads import Uploads


def measured(label: str, work: Callable[[], object]) -> object:
    tracemalloc.start()
    started = time.perf_counter()
    result = work()
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{label:<40} {took * 1000:8.1f} ms   peak {peak / 1024:8.1f} KiB")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=25)
    args = parser.parse_args()
    size = args.megabytes * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "source.bin"
        with open(source, "wb") as f:
            for _ in range(args.megabytes):
                f.write(os.urandom(1024 * 1024))
        uploads = Uploads(root / "uploads")

        def take() -> object:
            with open(source, "rb") as f:
                return uploads.add("session", f, "report.pdf", "application/pdf", size * 2)

        upload = measured(f"upload of {args.megabytes} MB to disk", take)
        assert upload is not None
        path = uploads.path("session", upload)  # type: ignore[arg-type]
        message = Outgoing(
            from_="alice@example.test",
            to=["bob@example.test"],
            subject="μηνιαία αναφορά",
            text="Σας στέλνω την αναφορά.\n",
            attachments=[Part(path, "αναφορά.pdf", "application/pdf")],
        )
        out = root / "message.eml"

        def build() -> object:
            with open(out, "wb") as f:
                write_message(f, message, "example.test")
            return None

        measured(f"MIME message with {args.megabytes} MB attached", build)
        print(f"{'message size':<40} {out.stat().st_size / 1024 / 1024:8.1f} MB")


if __name__ == "__main__":
    main()
