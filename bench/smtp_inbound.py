"""Inbound SMTP benchmark (issue 4): Postfix's smtp-source against ourmail's MX port, each
message durably delivered to a local user, side by side with Postfix's smtp-sink (no storage:
the ceiling of this machine).  Prints figures; asserts nothing.

    .venv/bin/python bench/smtp_inbound.py                 # 20 sessions, 2,000 x 4 KB
    .venv/bin/python bench/smtp_inbound.py --messages 10000

Needs Debian's postfix package for smtp-source and smtp-sink (no Postfix daemon is started).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import start_server, stop_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.auth.passwords import hash_password

USER = "user@bench.test"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def source(port: int, sessions: int, messages: int, size: int) -> float:
    """Run smtp-source; returns the seconds it took."""
    cmd = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-f", "sender@example.net", "-t", USER, f"127.0.0.1:{port}"]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install postfix (no configuration needed)")

    base = Path(tempfile.mkdtemp(prefix="ourmail-smtp-bench-", dir="/var/tmp"))
    server, port = start_server(base / "data", "smtp")
    server.accounts.add_user(USER, hash_password("x" * 12))

    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            samples.append(rss_mb())

    threading.Thread(target=sample, daemon=True).start()
    start_rss = rss_mb()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    ours = source(port, args.sessions, args.messages, args.size)
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_ms = (used.ru_utime - cpu.ru_utime + used.ru_stime - cpu.ru_stime) / args.messages * 1000
    done.set()
    folder = server.store.user(USER).folder("INBOX")
    blockingCallFromThread(reactor, folder.sync)
    stored = len(folder.uids())

    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{sink_port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    try:
        ceiling = source(sink_port, args.sessions, args.messages, args.size)
    finally:
        sink.terminate()

    n = args.messages
    print(f"{args.sessions} sessions, {n} messages of {args.size} bytes (smtp-source)")
    print(f"ourmail MX, durable delivery: {n / ours:7.0f} msg/s ({ours:.1f} s), {stored} stored")
    print(f"smtp-sink, no storage:         {n / ceiling:7.0f} msg/s ({ceiling:.1f} s)")
    print(f"ourmail reaches {ceiling / ours:.0%} of the smtp-sink rate on this machine")
    print(f"ourmail CPU per message (user + system, all threads): {cpu_ms:.2f} ms")
    peak = max(samples, default=start_rss)
    print(f"server RSS: {start_rss:.0f} MB at start, {peak:.0f} MB peak, {rss_mb():.0f} MB at end")
    stop_server(server)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
