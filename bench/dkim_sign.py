"""DKIM signing of outbound mail on one core: messages signed per second, 4 KB messages,
Ed25519 and RSA-2048 (issue 14's target: at least 1,000 a second with Ed25519).

Runs :meth:`ourmail.secure.dkimsign.DKIMSigner.signature`, what the queue calls in its
thread for every message it stores: the signing domain's choice, dkimpy's canonicalization
and hashing, the signature.  CPU time of this process is measured, so other load on the
machine does not count against it.

    .venv/bin/python bench/dkim_sign.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ourmail.secure.dkimkeys import Algorithm, KeyStore
from ourmail.secure.dkimsign import DKIMSigner


def message(size: int = 4096) -> bytes:
    """A plain-text message of ``size`` bytes with the usual header fields."""
    head = (
        b"From: Alice Example <alice@bench.test>\r\n"
        b"To: Bob <bob@remote.test>\r\n"
        b"Subject: The minutes of Tuesday's meeting\r\n"
        b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <20261130100000.1234@bench.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
    )
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return head + body[: size - len(head) - 2] + b"\r\n"


def rate(algorithm: Algorithm, seconds: float) -> float:
    """Messages signed per CPU second with one key of ``algorithm``."""
    with tempfile.TemporaryDirectory() as tmp:
        keys = KeyStore(Path(tmp))
        keys.generate("bench.test", "bench", algorithm)
        signer = DKIMSigner(keys, "mx.bench.test")
        msg = message()
        assert signer.signature(msg, "alice@bench.test", False)
        start = time.process_time()
        n = 0
        while time.process_time() - start < seconds:
            signer.signature(msg, "alice@bench.test", False)
            n += 1
        return n / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"DKIM signing, {len(message())}-byte messages, one core (CPU time)")
    for algorithm in ("ed25519", "rsa"):
        print(f"  {algorithm:8} {rate(algorithm, args.seconds):8.0f} messages/s")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
