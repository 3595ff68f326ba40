"""Inbound SMTP benchmark (issues 4 and 13): Postfix's smtp-source against ourmail's MX port
and against a private Postfix, in alternate rounds of the same run, each message durably in
the recipient's Maildir; then smtp-sink (no storage: the ceiling of this machine).  Prints
figures and the ourmail / Postfix ratio; asserts nothing.

    .venv/bin/python bench/smtp_inbound.py                 # 20 sessions, 2,000 x 4 KB, 3 rounds
    .venv/bin/python bench/smtp_inbound.py --rounds 5 --messages 10000
    .venv/bin/python bench/smtp_inbound.py --processes 1   # [smtp] mx_processes (default: unset)

Needs Debian's postfix package (smtp-source, smtp-sink, and the Postfix compared against):
see bench/postfix_peer.py for how to install it without configuring the system's Postfix.
Run as root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import postfix_peer
from harness import start_server, stop_server
from postfix_peer import installed, private_postfix

from ourmail.auth.passwords import hash_password
from ourmail.config import default_mx_processes

USER = "user@bench.test"


def server_pids() -> list[int]:
    """This process and its MX worker processes."""
    me = os.getpid()
    pids = [me]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if ppid == me and b"ourmail.mxworker" in cmdline:
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


def maildir_count(maildir: Path) -> int:
    """Messages in a Maildir's new/ and cur/."""
    total = 0
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            total += len(os.listdir(maildir / sub))
    return total


def durable_rate(
    port: int, args: argparse.Namespace, count: Callable[[], int] | None, timeout: float = 600
) -> float:
    """smtp-source's load against ``port``, timed until ``count()`` (the Maildir) has grown
    by every message sent (or until smtp-source ends, without ``count``); messages per second."""
    before = 0 if count is None else count()
    cmd = ["smtp-source", "-s", str(args.sessions), "-m", str(args.messages), "-l",
           str(args.size), "-f", "sender@example.net", "-t", USER, f"127.0.0.1:{port}"]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
    while count is not None and count() < before + args.messages:
        if time.perf_counter() - t > timeout:
            sys.exit(f"only {count() - before} of {args.messages} messages arrived")
        time.sleep(0.01)
    return args.messages / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3, help="alternate rounds of each side")
    ap.add_argument("--processes", type=int, help="[smtp] mx_processes (default: not set)")
    args = ap.parse_args()
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None or not installed():
            sys.exit(f"{tool} not found: install Debian's postfix (see bench/postfix_peer.py)")

    base = Path(tempfile.mkdtemp(prefix="ourmail-smtp-bench-", dir="/var/tmp"))
    base.chmod(0o755)  # Postfix's own users reach their folders inside
    changes = {} if args.processes is None else {"mx_processes": args.processes}
    server, port = start_server(base / "data", "smtp", **changes)
    server.accounts.add_user(USER, hash_password("x" * 12))
    processes = args.processes or default_mx_processes()
    while len(server_pids()) < processes:  # the workers are starting
        time.sleep(0.1)
    time.sleep(1.0)
    pids = server_pids()
    ours_maildir = server.store.shards.user_dir(USER)

    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            samples.append(rss_mb(pids))

    threading.Thread(target=sample, daemon=True).start()
    start_rss = rss_mb(pids)
    ours: list[float] = []
    theirs: list[float] = []
    cpu = postfix_cpu = 0.0
    postfix_port = free_port()
    with private_postfix(base / "postfix", postfix_port, USER) as postfix_maildir:
        time.sleep(1.0)
        for n in range(args.rounds):
            first, second = ("ourmail", "postfix") if n % 2 == 0 else ("postfix", "ourmail")
            for side in (first, second):
                if side == "ourmail":
                    before = cpu_seconds(pids)
                    ours.append(durable_rate(port, args, lambda: maildir_count(ours_maildir)))
                    cpu += cpu_seconds(pids) - before
                else:
                    before = postfix_peer.cpu_seconds(base / "postfix")
                    theirs.append(
                        durable_rate(postfix_port, args, lambda: maildir_count(postfix_maildir))
                    )
                    time.sleep(1.0)  # qmgr and virtual finish their bookkeeping
                    postfix_cpu += postfix_peer.cpu_seconds(base / "postfix") - before
            print(f"round {n + 1}: ourmail {ours[-1]:5.0f} msg/s, Postfix {theirs[-1]:5.0f} msg/s")
    done.set()

    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{sink_port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    try:
        ceiling = durable_rate(sink_port, args, None)
    finally:
        sink.terminate()

    setting = "not set" if args.processes is None else str(args.processes)
    print(f"{args.sessions} sessions, {args.messages} messages of {args.size} bytes (smtp-source)")
    print(f"ourmail MX processes: {processes} ([smtp] mx_processes {setting}) "
          f"on {os.cpu_count()} cores")  # fmt: skip
    o, p = statistics.median(ours), statistics.median(theirs)
    print(f"ourmail, durable in the Maildir: median {o:5.0f} msg/s "
          f"({', '.join(f'{r:.0f}' for r in ours)})")  # fmt: skip
    print(f"Postfix, durable in the Maildir: median {p:5.0f} msg/s "
          f"({', '.join(f'{r:.0f}' for r in theirs)})")  # fmt: skip
    ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs, strict=True))
    print(f"ourmail / Postfix: {o / p:.2f}x (median of each; per round: {ratios})")
    print(f"smtp-sink, no storage: {ceiling:5.0f} msg/s")
    sent = args.messages * args.rounds
    print(f"CPU per message (user + system, all processes): ourmail {cpu / sent * 1000:.2f} ms, "
          f"Postfix {postfix_cpu / sent * 1000:.2f} ms")  # fmt: skip
    peak = max(samples, default=start_rss)
    end = rss_mb(pids)
    print(f"server RSS (all processes): {start_rss:.0f} MB at start, {peak:.0f} MB peak, "
          f"{end:.0f} MB at end")  # fmt: skip
    stop_server(server)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
