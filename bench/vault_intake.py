"""What the vault costs at intake (issue 18): inbound SMTP with the vault off and on, side by
side in one run (two servers in this process, alternate rounds), each message durable in the
recipient's Maildir (and the vault) before its 250.  Prints messages/s of each, the ratio
(target: the vault costs at most 15 %), and the vault's octets per message; asserts nothing.

    .venv/bin/python bench/vault_intake.py                  # 20 sessions, 2,000 x 4 KB, 3 rounds
    .venv/bin/python bench/vault_intake.py --sessions 4 --messages 200 --rounds 1   # smoke run

The load is many concurrent smtplib clients on loopback, in their own processes (so they do
not share the server's interpreter), each message a different text of about ``--size`` octets
(so bodies neither deduplicate nor compress as a repeated message would).  The filter chain
is off on both sides (bench/filter_chain.py measures it), with one MX process each.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import smtplib
import statistics
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path

from harness import start_server, stop_server

from ourmail.admin.vaultcmd import status
from ourmail.auth.passwords import hash_password
from ourmail.config import load_settings

USER = "user@bench.test"
_TEXT = (
    "the council minutes budget meeting report agenda please find attached regards planning "
    "school road permit office tender contract invoice deadline review draft public notice "
    "committee approval schedule water works housing request reply thanks"
)
WORDS = tuple(_TEXT.split())


def messages(seed: int, count: int, size: int) -> list[bytes]:
    """``count`` different messages of about ``size`` octets of plain text."""
    rng = random.Random(seed)  # noqa: S311 (test text, not a secret)
    out = []
    for n in range(count):
        lines, length = [], 0
        while length < size:
            line = " ".join(rng.choice(WORDS) for _ in range(12))
            lines.append(line)
            length += len(line) + 2
        head = f"From: sender@example.net\r\nTo: {USER}\r\nSubject: bench {seed} {n}\r\n\r\n"
        out.append(head.encode() + "\r\n".join(lines).encode() + b"\r\n")
    return out


def client(port: int, seed: int, count: int, size: int, go: Event, ready: Event) -> None:
    """One session: prepare its messages, wait for the start, send them one after another."""
    prepared = messages(seed, count, size)
    ready.set()
    go.wait()
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
        for data in prepared:
            s.sendmail("sender@example.net", [USER], data)


def rate(port: int, args: argparse.Namespace, round_: int) -> float:
    """Messages per second of ``args.sessions`` concurrent sessions against ``port``."""
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Event()
    per = args.messages // args.sessions
    procs, readies = [], []
    for i in range(args.sessions):
        ready = spawn.Event()
        seed = round_ * 100_000 + port * 1000 + i
        p = spawn.Process(target=client, args=(port, seed, per, args.size, go, ready))
        p.start()
        procs.append(p)
        readies.append(ready)
    for ready in readies:
        ready.wait(120)
    t = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a client failed (exit code {p.exitcode})")
    return per * args.sessions / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=2000, help="per round and side")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3, help="alternate rounds of each side")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="ourmail-vault-bench-", dir="/var/tmp"))
    ports = {}
    servers = {}
    for side, enabled in (("off", "false"), ("on", "true")):
        data = base / side
        data.mkdir()
        (data / "ourmail.toml").write_text(
            f"[filters]\nchain = []\n\n[vault]\nenabled = {enabled}\n"
        )
        servers[side], ports[side] = start_server(data, "smtp", mx_processes=1)
        servers[side].accounts.add_user(USER, hash_password("x" * 12))
    time.sleep(1.0)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for n in range(args.rounds):
        order = ("off", "on") if n % 2 == 0 else ("on", "off")
        for side in order:
            rates[side].append(rate(ports[side], args, n))
        print(f"round {n + 1}: vault off {rates['off'][-1]:5.0f} msg/s, "
              f"on {rates['on'][-1]:5.0f} msg/s")  # fmt: skip
    report = status(load_settings(data=str(base / "on")))
    for server in servers.values():
        stop_server(server)

    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(f"{args.sessions} smtplib sessions, {args.messages} messages of ~{args.size} octets "
          f"per round and side, {args.rounds} rounds")  # fmt: skip
    print(f"vault off: median {off:5.0f} msg/s ({', '.join(f'{r:.0f}' for r in rates['off'])})")
    print(f"vault on:  median {on:5.0f} msg/s ({', '.join(f'{r:.0f}' for r in rates['on'])})")
    print(
        f"on / off: {on / off:.2f} (the vault costs {100 * (1 - on / off):.0f} %; target <= 15 %)"
    )
    captured = report["messages"]
    segments = sum(root["octets"] for root in report["roots"].values())
    print(f"vault: {captured} messages, {report['original_octets'] / captured:.0f} octets each "
          f"as received, {segments / captured:.0f} octets each in the segments "
          f"(ratio {report['ratio']}:1)")  # fmt: skip
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
