"""Inbound SMTP benchmark (issue 4): Postfix's smtp-source against ourmail's MX port, each
message durably delivered to a local user, side by side with Postfix's smtp-sink (no storage:
the ceiling of this machine).  Prints figures; asserts nothing.

    .venv/bin/python bench/smtp_inbound.py                 # 20 sessions, 2,000 x 4 KB
    .venv/bin/python bench/smtp_inbound.py --messages 10000
    .venv/bin/python bench/smtp_inbound.py --processes 1   # one process (default: a core each)

Needs Debian's postfix package for smtp-source and smtp-sink (no Postfix daemon is started).
"""

from __future__ import annotations

import argparse
import os
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


def server_pids() -> list[int]:
    """This process and its MX worker processes."""
    me = os.getpid()
    pids = [me]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == me and b"ourmail.mxworker" in Path(f"/proc/{entry}/cmdline").read_bytes():
                pids.append(int(entry))
    return pids


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of ``pids`` (all threads)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


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
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="mx_processes")
    args = ap.parse_args()
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install postfix (no configuration needed)")

    base = Path(tempfile.mkdtemp(prefix="ourmail-smtp-bench-", dir="/var/tmp"))
    server, port = start_server(base / "data", "smtp", mx_processes=args.processes)
    server.accounts.add_user(USER, hash_password("x" * 12))
    while len(server_pids()) < args.processes:  # the workers are starting
        time.sleep(0.1)
    time.sleep(1.0)
    pids = server_pids()

    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            samples.append(rss_mb(pids))

    threading.Thread(target=sample, daemon=True).start()
    start_rss = rss_mb(pids)
    cpu = cpu_seconds(pids)
    ours = source(port, args.sessions, args.messages, args.size)
    cpu_ms = (cpu_seconds(pids) - cpu) / args.messages * 1000
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
    print(f"ourmail MX processes: {args.processes} on {os.cpu_count()} cores")
    print(f"ourmail MX, durable delivery: {n / ours:7.0f} msg/s ({ours:.1f} s), {stored} stored")
    print(f"smtp-sink, no storage:         {n / ceiling:7.0f} msg/s ({ceiling:.1f} s)")
    print(f"ourmail reaches {ceiling / ours:.0%} of the smtp-sink rate on this machine")
    print(f"ourmail CPU per message (user + system, all processes): {cpu_ms:.2f} ms")
    peak = max(samples, default=start_rss)
    end = rss_mb(pids)
    print(f"server RSS (all processes): {start_rss:.0f} MB at start, {peak:.0f} MB peak, "
          f"{end:.0f} MB at end")  # fmt: skip
    stop_server(server)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
