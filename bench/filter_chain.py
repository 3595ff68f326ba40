"""What the filter chain costs at intake (issue 14): smtp-source sends the same DKIM-signed
message (RSA-2048) to two ourmail servers in alternate rounds, one with the whole chain
(DNSBL at connect, SPF at MAIL, DKIM, DMARC at the end of DATA, every lookup against a
twisted.names server on loopback) and one without filters; each message durably in the
Maildir.  Prints both rates and the share of throughput the chain costs; asserts nothing.

    .venv/bin/python bench/filter_chain.py                 # 20 sessions, 2,000 x 4 KB, 3 rounds

Needs Debian's postfix package for smtp-source (see bench/postfix_peer.py).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import ensure_reactor, start_server, stop_server
from smtp_inbound import USER, cpu_seconds, durable_rate, maildir_count, server_pids
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.auth.passwords import hash_password
from ourmail.config import default_mx_processes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from peers import dns as testdns

SENDER_DOMAIN = "example.net"
SELECTOR = "bench"
BLOCKLIST = "bl.bench.test"


def signed_message(size: int) -> tuple[bytes, str]:
    """A message from SENDER_DOMAIN, DKIM-signed with a new RSA-2048 key (relaxed/relaxed),
    with LF line ends as smtp-source -F wants them; and the key's DNS TXT value."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * max(1, size // len(line))
    head = (
        f"From: Sender <sender@{SENDER_DOMAIN}>\r\nTo: <{USER}>\r\nSubject: benchmark\r\n"
        f"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench@{SENDER_DOMAIN}>\r\n"
    ).encode()
    message = head + b"\r\n" + body
    signature = dkim.sign(
        message,
        SELECTOR.encode(),
        SENDER_DOMAIN.encode(),
        pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()
    return (signature + message).replace(b"\r\n", b"\n"), record


def config(dns_port: int, chain: list[str]) -> str:
    text = f'[dns]\nservers = ["127.0.0.1:{dns_port}"]\n'
    text += "[filters]\nchain = [" + ", ".join(f'"{name}"' for name in chain) + "]\n"
    if "dnsbl" in chain:
        text += f'[filters.check.dnsbl]\nzones = [{{ zone = "{BLOCKLIST}", weight = 1 }}]\n'
    if "spf" in chain:
        # The load comes from loopback, which SPF skips by default: check it here.
        text += "[filters.check.spf]\nskip_networks = []\n"
    return text


def results_of(maildir: Path) -> str:
    """The Authentication-Results of one delivered message (to show the checks passed)."""
    for sub in ("new", "cur"):
        for path in sorted((maildir / sub).glob("*"))[:1]:
            head = path.read_bytes().split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
            fields = re.split(r"\r\n(?![ \t])", head)
            return " ".join(f for f in fields if f.startswith("Authentication-Results"))
    return "(no message)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chain", default="dnsbl,spf,dkim,dmarc", help="the checks measured")
    ap.add_argument(
        "--ttl", type=int, default=300,
        help="TTL of the zone's records (0: every lookup goes to the DNS server)",
    )  # fmt: skip
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="ourmail-filter-bench-", dir="/var/tmp"))
    message, record = signed_message(args.size)
    message_file = base / "message.txt"
    message_file.write_bytes(message)
    zone = testdns.TestZone()
    zone.negative_ttl = args.ttl  # "no data" answers carry an SOA, as real zones' do
    ttl = args.ttl
    zone.set_txt(SENDER_DOMAIN, "v=spf1 ip4:127.0.0.0/8 -all", ttl=ttl)
    zone.set_txt(f"_dmarc.{SENDER_DOMAIN}", "v=DMARC1; p=reject", ttl=ttl)
    # RFC 7208 §3.3 / RFC 6376 §3.6.2.2: a long record is several strings of at most 255.
    chunks = [record[i : i + 255] for i in range(0, len(record), 255)]
    zone.set_txt(f"{SELECTOR}._domainkey.{SENDER_DOMAIN}", chunks, ttl=ttl)
    zone.set_address(f"client.{SENDER_DOMAIN}", "127.0.0.1", ttl=ttl)
    zone.set_txt(BLOCKLIST, "a zone that lists nobody", ttl=ttl)
    ensure_reactor()
    _, dns_port = blockingCallFromThread(reactor, testdns.start, zone)
    main_pid = os.getpid()
    known: set[int] = {main_pid}
    servers = {}
    for name, chain in (("filters on", args.chain.split(",")), ("filters off", [])):
        data = base / name.replace(" ", "-") / "data"
        data.mkdir(parents=True)
        (data / "ourmail.toml").write_text(config(dns_port, chain))
        server, port = start_server(data, "smtp")
        server.accounts.add_user(USER, hash_password("x" * 12))
        while len(set(server_pids()) - known) < default_mx_processes() - 1:
            time.sleep(0.1)  # the MX workers are starting
        workers = set(server_pids()) - known
        known |= workers
        # The main process serves both (one reactor): its time counts for the side running.
        servers[name] = (server, port, [main_pid, *workers])
    time.sleep(1.0)

    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpu = dict.fromkeys(servers, 0.0)
    for n in range(args.rounds):
        order = list(servers) if n % 2 == 0 else list(reversed(servers))
        for name in order:
            server, port, pids = servers[name]
            maildir = server.store.shards.user_dir(USER)
            before = cpu_seconds(pids)
            count = lambda m=maildir: maildir_count(m)  # noqa: E731
            helo = f"client.{SENDER_DOMAIN}"
            rates[name].append(durable_rate(port, args, count, message=message_file, helo=helo))
            cpu[name] += cpu_seconds(pids) - before
        print(", ".join(f"{name} {rates[name][-1]:5.0f} msg/s" for name in servers))
    for name, (server, _, _) in servers.items():
        print(f"{name}: {results_of(server.store.shards.user_dir(USER))}")
    on, off = (statistics.median(rates[name]) for name in servers)
    print(f"{args.sessions} sessions, {args.messages} messages (smtp-source -F, DKIM RSA-2048), "
          f"DNS TTL {args.ttl} s")  # fmt: skip
    print(f"filters on  ({args.chain}): median {on:5.0f} msg/s")
    print(f"filters off:                           median {off:5.0f} msg/s")
    print(f"the chain costs {1 - on / off:.0%} of the throughput (target: at most 25%)")
    sent = args.messages * args.rounds
    for name in servers:
        print(f"CPU per message, {name}: {cpu[name] / sent * 1000:.2f} ms (all processes)")
    for server, _, _ in servers.values():
        stop_server(server)


if __name__ == "__main__":
    main()
