"""CPU per message of each check of the filter chain, in this process, without SMTP (issue 14).

Runs the chain's stages (connect, MAIL, end of DATA) for the same DKIM-signed message
(RSA-2048) from a client that passes SPF, with ``--concurrency`` transactions in flight,
against a twisted.names server on loopback; first the whole chain, then the chain without
each check in turn.  Prints CPU milliseconds per message (all threads of this process, so
a busy machine skews the figures less than throughput does) and what each check adds.

    .venv/bin/python bench/filter_cpu.py                      # 3,000 messages
    .venv/bin/python bench/filter_cpu.py --profile out.pstats # cProfile of the whole chain
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import tempfile
import time
from pathlib import Path

from filter_chain import BLOCKLIST, SELECTOR, SENDER_DOMAIN, config, signed_message
from twisted.internet import defer, reactor, task

from ourmail.config import load_settings
from ourmail.interfaces import MailContext
from ourmail.service import filter_checks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from peers import dns as testdns

CLIENT = "127.0.0.1"
HELO = f"client.{SENDER_DOMAIN}"


def chain_for(data: Path, dns_port: int, checks: list[str]):  # type: ignore[no-untyped-def]
    data.mkdir(parents=True)
    (data / "ourmail.toml").write_text(config(dns_port, checks))
    settings = load_settings(data=str(data), domains=("bench.test",), hostname="bench.test")
    return filter_checks(settings, reactor, None)  # type: ignore[arg-type]


async def one(chain, message: bytes) -> None:  # type: ignore[no-untyped-def]
    context = MailContext(CLIENT, "smtp", HELO)
    for stage in ("connect", "mail", "data"):
        if stage == "mail":
            context.sender = f"sender@{SENDER_DOMAIN}"
            context.recipients = ["user@bench.test"]
        if stage == "data":
            context.content = b"Received: from x by bench.test; today\r\n" + message
        outcome = await chain.run(stage, context)
        assert outcome.refusal is None and not outcome.junk, (stage, outcome)


async def measure(chain, message: bytes, count: int, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    """CPU seconds per message."""
    for _ in range(20):  # warm the caches
        await one(chain, message)
    started = time.process_time()
    left = iter(range(count))

    async def worker() -> None:
        for _ in left:
            await one(chain, message)

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(concurrency)])
    return (time.process_time() - started) / count


async def run(args: argparse.Namespace) -> None:
    message, record = signed_message(args.size)
    message = message.replace(b"\n", b"\r\n")
    zone = testdns.TestZone()
    zone.negative_ttl = args.ttl
    zone.set_txt(SENDER_DOMAIN, "v=spf1 ip4:127.0.0.0/8 -all", ttl=args.ttl)
    zone.set_txt(f"_dmarc.{SENDER_DOMAIN}", "v=DMARC1; p=reject", ttl=args.ttl)
    chunks = [record[i : i + 255] for i in range(0, len(record), 255)]
    zone.set_txt(f"{SELECTOR}._domainkey.{SENDER_DOMAIN}", chunks, ttl=args.ttl)
    zone.set_address(HELO, CLIENT, ttl=args.ttl)
    zone.set_txt(BLOCKLIST, "a zone that lists nobody", ttl=args.ttl)
    _, port = testdns.start(zone)
    base = Path(tempfile.mkdtemp(prefix="ourmail-filter-cpu-", dir="/var/tmp"))
    checks = args.chain.split(",")
    whole = chain_for(base / "whole", port, checks)
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        per = await measure(whole, message, args.messages, args.concurrency)
        profile.disable()
        profile.dump_stats(args.profile)
        print(f"whole chain: {per * 1000:.3f} ms CPU per message (profiled)")
        return
    total = await measure(whole, message, args.messages, args.concurrency)
    print(f"whole chain ({args.chain}): {total * 1000:.3f} ms CPU per message")
    if args.whole:
        return
    for name in checks:
        without = chain_for(base / f"without-{name}", port, [c for c in checks if c != name])
        rest = await measure(without, message, args.messages, args.concurrency)
        print(f"  {name:6}: +{(total - rest) * 1000:.3f} ms")
    empty = await measure(chain_for(base / "empty", port, []), message, args.messages, 1)
    print(f"no checks: {empty * 1000:.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--ttl", type=int, default=300)
    ap.add_argument("--chain", default="dnsbl,spf,dkim,dmarc")
    ap.add_argument("--profile", help="write a cProfile of the whole chain here")
    ap.add_argument("--whole", action="store_true", help="measure only the whole chain")
    args = ap.parse_args()
    task.react(lambda _r: defer.Deferred.fromCoroutine(run(args)))


if __name__ == "__main__":
    main()
