"""Large messages over IMAP (issue 5): server memory while a client fetches a 50 MB message
whole (BODY[]) and its 37 MB base64 attachment decoded (BINARY[2]).  Prints figures; asserts
nothing.

    .venv/bin/python bench/imap_large.py
    .venv/bin/python bench/imap_large.py --megabytes 100

The client reads and discards the literal as it arrives, so the anonymous memory (RssAnon) of
this process is the server's; the message file's pages are shared page cache, not counted.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import re
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import start_server, stop_server
from store import SECRET
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.auth.passwords import hash_password

USER = "user@bench.test"


def rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def big_message(megabytes: int) -> bytes:
    payload = os.urandom(megabytes * 1024 * 1024 * 3 // 4)
    return (
        b"From: a@bench.test\r\nTo: user@bench.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(payload).replace(b"\n", b"\r\n")
        + b"--b--\r\n"
    )


class Client:
    def __init__(self, port: int) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
        self.buf = b""
        self.line()
        self.command(f'LOGIN {USER} "{SECRET}"')
        self.command("SELECT INBOX")

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(1 << 16)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def command(self, text: str) -> int:
        """Send, read the answer, discard literals as they arrive; the literal bytes seen."""
        self.sock.sendall(b"x " + text.encode() + b"\r\n")
        seen = 0
        while True:
            line = self.line()
            if line.startswith(b"x "):
                return seen
            m = re.search(rb"~?\{(\d+)\}$", line)
            if m:
                left = int(m.group(1)) - len(self.buf)
                seen += int(m.group(1))
                self.buf = b"" if left >= 0 else self.buf[int(m.group(1)) :]
                while left > 0:
                    left -= len(self.sock.recv(min(left, 1 << 16)))


def measure(client: Client, command: str) -> tuple[float, int, float]:
    """Seconds, literal bytes, and the peak RssAnon growth in MB while it runs."""
    gc.collect()
    base, peak, running = rss_anon_mb(), [0.0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], rss_anon_mb())
            time.sleep(0.005)

    watcher = threading.Thread(target=sample)
    watcher.start()
    t = time.perf_counter()
    size = client.command(command)
    took = time.perf_counter() - t
    running[0] = False
    watcher.join()
    return took, size, max(peak[0] - base, 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--megabytes", type=int, default=50)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ourmail-large-bench-", dir="/var/tmp"))
    server, port = start_server(base / "data", "imaps")
    server.accounts.add_user(USER, hash_password(SECRET))
    data = big_message(args.megabytes)
    user = server.store.user(USER)
    blockingCallFromThread(reactor, user.deliver, data)
    size = len(data)
    del data
    client = Client(port)
    print(f"one message of {size / 1e6:.1f} MB (a base64 attachment inside)")
    print(f"{'command':<34}{'time':>8}{'bytes':>14}{'server memory growth':>24}")
    for command in ("UID FETCH 1 BODY.PEEK[]", "UID FETCH 1 BINARY.PEEK[2]",
                    "UID FETCH 1 BINARY.SIZE[2]", "UID SEARCH BODY zzzz-not-there"):  # fmt: skip
        took, seen, grew = measure(client, command)
        print(f"{command:<34}{took:>7.2f}s{seen:>14,}{grew:>21.1f} MB")
    stop_server(server)
    shutil.rmtree(base, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
