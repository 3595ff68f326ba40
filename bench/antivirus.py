"""What the antivirus costs at intake (issue 15): smtp-source sends the same clean message to
two ourmail servers in alternate rounds, one with the ``antivirus`` check (a private clamd on
loopback, tests/peers/clamd.py) and one without filters, each message durably in the
Maildir; and in the same rounds clamd's own ceiling for that message at the same
concurrency: a bare loop of ourmail's clamd client (``ClamdClient.scan``, IDSESSION
sessions), no SMTP.  Prints the three rates, the ratio the issue sets a target for (AV on
/ the lower of AV off and the ceiling, at least 90%) and the CPU per message; asserts nothing.

    .venv/bin/python bench/antivirus.py                    # 20 sessions, 2,000 x 4 KB, 3 rounds
    .venv/bin/python bench/antivirus.py --messages 500 --rounds 1   # a quick look

Needs Debian's postfix (smtp-source, see bench/postfix_peer.py) and clamav-daemon.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import ensure_reactor, start_server, stop_server
from smtp_inbound import USER, cpu_seconds, durable_rate, maildir_count, server_pids
from twisted.internet import defer, reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.auth.passwords import hash_password
from ourmail.config import default_mx_processes
from ourmail.filters.clamd import ClamdClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from peers import clamd as clamd_peer


def clean_message(size: int) -> bytes:
    """A plain text message of about ``size`` bytes, LF line ends as smtp-source -F wants."""
    head = f"From: <sender@example.net>\nTo: <{USER}>\nSubject: benchmark\n\n".encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    return head + line * max(1, size // len(line))


def config(address: str | None, connections: int) -> str:
    if address is None:
        return "[filters]\nchain = []\n"
    return (
        '[filters]\nchain = ["antivirus"]\n[filters.check.antivirus]\n'
        f'address = "{address}"\nconnections = {connections}\n'
    )


def ceiling(address: str, message: bytes, sessions: int, messages: int) -> tuple[float, float]:
    """clamd's rate for ``messages`` scans of ``message``, ``sessions`` at a time, through
    ourmail's client on this process's reactor; and this process's CPU seconds per scan."""
    wire = message.replace(b"\n", b"\r\n")
    client: ClamdClient = blockingCallFromThread(
        reactor, lambda: ClamdClient(reactor, address, connections=sessions)
    )

    async def loop(count: int) -> None:
        for _ in range(count):
            result = await client.scan(wire)
            assert not result.infected

    def run() -> defer.Deferred[object]:
        shares = [messages // sessions + (i < messages % sessions) for i in range(sessions)]
        return defer.gatherResults([defer.Deferred.fromCoroutine(loop(n)) for n in shares])

    before, t = cpu_seconds([os.getpid()]), time.perf_counter()
    blockingCallFromThread(reactor, run)
    elapsed, cpu = time.perf_counter() - t, cpu_seconds([os.getpid()]) - before
    blockingCallFromThread(reactor, client.close)
    return messages / elapsed, cpu / messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--unix", action="store_true", help="clamd's unix socket instead of TCP")
    ap.add_argument("--threads", type=int, default=10, help="clamd's MaxThreads")
    ap.add_argument(
        "--connections", type=int, default=0,
        help="the check's connections per MX process (default: --sessions)",
    )  # fmt: skip
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="ourmail-av-bench-", dir="/var/tmp"))
    message = clean_message(args.size)
    message_file = base / "message.txt"
    message_file.write_bytes(message)
    ensure_reactor()
    with clamd_peer.clamd(threads=args.threads) as clamd:
        address = clamd.socket if args.unix else clamd.address
        main_pid = os.getpid()
        known: set[int] = {main_pid}
        servers = {}
        for name, av in (("AV on", address), ("AV off", None)):
            data = base / name.replace(" ", "-") / "data"
            data.mkdir(parents=True)
            (data / "ourmail.toml").write_text(config(av, args.connections or args.sessions))
            server, port = start_server(data, "smtp")
            server.accounts.add_user(USER, hash_password("x" * 12))
            while len(set(server_pids()) - known) < default_mx_processes() - 1:
                time.sleep(0.1)  # the MX workers are starting
            workers = set(server_pids()) - known
            known |= workers
            servers[name] = (server, port, [main_pid, *workers])
        time.sleep(1.0)

        rates: dict[str, list[float]] = {name: [] for name in (*servers, "clamd ceiling")}
        cpu = dict.fromkeys(rates, 0.0)
        clamd_cpu = dict.fromkeys(rates, 0.0)
        assert clamd.proc is not None
        clamd_pids = [clamd.proc.pid]
        # A round not counted: clamd, the MX workers and the file system warm up.
        durable_rate(servers["AV on"][1], args, None, message=message_file)
        for n in range(args.rounds):
            order = [*servers, "clamd ceiling"]
            order = order if n % 2 == 0 else order[::-1]
            for name in order:
                clamd_before = cpu_seconds(clamd_pids)
                if name == "clamd ceiling":
                    rate, per = ceiling(address, message, args.sessions, args.messages)
                    rates[name].append(rate)
                    cpu[name] += per * args.messages
                    clamd_cpu[name] += cpu_seconds(clamd_pids) - clamd_before
                    continue
                server, port, pids = servers[name]
                maildir = server.store.shards.user_dir(USER)
                before = cpu_seconds(pids)
                count = lambda m=maildir: maildir_count(m)  # noqa: E731
                rates[name].append(durable_rate(port, args, count, message=message_file))
                cpu[name] += cpu_seconds(pids) - before
                clamd_cpu[name] += cpu_seconds(clamd_pids) - clamd_before
            print(", ".join(f"{name} {rates[name][-1]:5.0f} msg/s" for name in rates))
        for server, _, _ in servers.values():
            stop_server(server)

    on, off, top = (statistics.median(rates[name]) for name in rates)
    sent = args.messages * args.rounds
    over = "its unix socket" if args.unix else "TCP"
    print(
        f"{args.sessions} sessions, {args.messages} messages of {len(message)} bytes, "
        f"{args.rounds} rounds, clamd over {over}"
    )
    print(f"AV on:         median {on:6.0f} msg/s")
    print(f"AV off:        median {off:6.0f} msg/s")
    print(f"clamd ceiling: median {top:6.0f} msg/s (bare INSTREAM loop, same concurrency)")
    print(f"AV on reaches {on / min(off, top):.0%} of min(AV off, ceiling) (target: at least 90%)")
    for name in servers:
        print(
            f"CPU per message, {name}: {cpu[name] / sent * 1000:.2f} ms ourmail (all processes)"
            f" + {clamd_cpu[name] / sent * 1000:.2f} ms clamd"
        )
    print(
        f"CPU per message, bare loop: {cpu['clamd ceiling'] / sent * 1000:.2f} ms the clamd "
        f"client alone + {clamd_cpu['clamd ceiling'] / sent * 1000:.2f} ms clamd"
    )
    print(f"this machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
