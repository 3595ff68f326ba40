"""A mailing-list post to many recipients: ourmail's outbound queue against Postfix, side by
side in one run, both delivering to the same counting sink (issue 19).

    .venv/bin/python bench/lists_delivery.py                 # 10,000 recipients
    .venv/bin/python bench/lists_delivery.py --verp          # ourmail with VERP as well
    .venv/bin/python bench/lists_delivery.py --quick         # a smoke run: 1,000 recipients

One 10 KB post goes to ``--recipients`` addresses spread over ``--domains`` domains
(``m<j>@d<i>.sink.test``).  Every run is timed from the hand-off (``enqueue``; Postfix's
``sendmail``) to the last ``RCPT`` the sink accepted, so queueing it durably is included.

* The sink (``bench/countsink.py``) is a process of its own: a bare SMTP server on 127.0.0.1
  that counts and discards, and the DNS server through which ourmail's queue finds it (each
  domain's MX is ``mx.sink.test``, 127.0.0.1).
* ourmail: one server (``bench/harness.py``) in this process, its queue with ``smtp_port`` and
  ``dns_servers`` pointing at the sink, every other setting its default (5 connections per
  domain, 100 in all, 100 recipients per transaction).  ``--verp`` adds a run with
  ``enqueue(..., verp=True)``, one transaction per recipient (the wiring part of issue 19).
  ``--single`` adds a run with one recipient per transaction and one sender (the queue's
  ``RCPTS_PER_MESSAGE`` set to 1): the queue's cost of VERP's transactions, where ``enqueue``
  has no ``verp`` yet.
* Postfix: a private instance of Debian's Postfix per run (its own ``main.cf``, ``master.cf``,
  queue and data directories in a temporary folder; no ``smtpd`` at all, so nothing listens),
  the post injected with ``sendmail -C <dir>``, ``relayhost = [127.0.0.1]:<sink>``, every
  concurrency and recipient limit at its default.  Once with ``-XV`` (XVERP: the sink offers
  no XVERP, so Postfix's SMTP client sends one transaction per recipient with the expanded
  sender) and once without.

Runs as root (Postfix's master drops to the ``postfix`` user, ``postdrop`` needs its group);
Postfix must be installed but neither configured nor started (see ``bench/postfix_peer.py``).
Prints a table and asserts nothing; CPU seconds are ourmail's process (the sink runs apart)
and Postfix's master with all its children.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import attrs
from harness import start_server, stop_server
from postfix_peer import cpu_seconds, installed
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.config import QueueSettings
from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.queue import runner
from ourmail.queue.runner import OutboundQueue

HERE = Path(__file__).resolve().parent
SENDER = "news-bounces@bench.test"
#: Give up on a run when the sink has counted nothing new for this long.
STALL = 120.0
RCPTS_PER_MESSAGE = runner.RCPTS_PER_MESSAGE

MASTER_CF = """\
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
mail_owner = postfix
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{port}
smtp_tls_security_level = none
"""


@attrs.frozen
class Result:
    """One run's figures."""

    name: str
    seconds: float
    rcpts: int
    messages: int
    senders: int
    cpu: float
    queued: float  # seconds until the hand-off returned
    first: float  # seconds until the first RCPT


class Sink:
    """The counting sink's process, and a control connection to it."""

    def __init__(self, domains: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "countsink.py"), "--domains", str(domains)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        smtp, dns = self.process.stdout.readline().split()
        self.port, self.dns_port = int(smtp), int(dns)
        self.control = socket.create_connection(("127.0.0.1", self.port))
        self.replies = self.control.makefile("rb")
        self.replies.readline()  # the greeting

    def ask(self, command: bytes) -> list[str]:
        self.control.sendall(command + b"\r\n")
        return self.replies.readline().decode().split()[1:]

    def reset(self) -> None:
        self.ask(b"XRESET")

    def stats(self) -> tuple[int, int, int, float, float]:
        """Recipients, messages and distinct senders counted; the times of the first and the
        last RCPT."""
        rcpts, messages, senders, first, last, _ = self.ask(b"XSTATS")
        return int(rcpts), int(messages), int(senders), float(first), float(last)

    def wait(self, rcpts: int) -> tuple[int, int, int, float, float]:
        """Until ``rcpts`` recipients are counted, or nothing more came for ``STALL``."""
        seen, since = -1, time.monotonic()
        while True:
            stats = self.stats()
            if stats[0] >= rcpts:
                return stats
            if stats[0] != seen:
                seen, since = stats[0], time.monotonic()
            elif time.monotonic() - since > STALL:
                print(f"  stalled at {stats[0]} of {rcpts} recipients", file=sys.stderr)
                return stats
            time.sleep(0.1)

    def close(self) -> None:
        self.control.close()
        self.process.terminate()
        self.process.wait()


def recipients(count: int, domains: int) -> list[str]:
    """``count`` addresses spread evenly over ``domains`` domains."""
    return [f"m{j}@d{j % domains}.sink.test" for j in range(count)]


def post(size: int = 10 * 1024) -> bytes:
    """A list post of about ``size`` octets, CRLF lines."""
    header = (
        "From: Alice Example <alice@bench.test>\r\n"
        "To: news@bench.test\r\n"
        "Subject: [news] The council's agenda for next week\r\n"
        f"Date: {formatdate()}\r\n"
        "Message-ID: <bench-lists-delivery@bench.test>\r\n"
        "List-Id: <news.bench.test>\r\n"
        "List-Unsubscribe: <mailto:news-leave@bench.test>\r\n"
        "Precedence: list\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, and the agenda follows below.\r\n"
    return header + line * ((size - len(header)) // len(line))


def run_ourmail(sink: Sink, rcpts: list[str], message: bytes, mode: str, work: Path) -> Result:
    """``mode``: "" (100 recipients per transaction), "verp" or "single" (see above)."""
    verp = mode == "verp"
    runner.RCPTS_PER_MESSAGE = 1 if mode == "single" else RCPTS_PER_MESSAGE
    queue = QueueSettings(smtp_port=sink.port, dns_servers=(f"127.0.0.1:{sink.dns_port}",))
    server, _ = start_server(work, "smtp", queue=queue)
    try:
        sink.reset()
        extra = {"verp": True} if verp else {}
        cpu, start = time.process_time(), time.time()
        blockingCallFromThread(
            reactor,
            server.queue.enqueue,
            SENDER,
            [(r, NO_RCPT_PARAMS) for r in rcpts],
            message,
            NO_MAIL_PARAMS,
            False,
            **extra,
        )
        queued = time.time() - start
        counted, _, _, first, last = sink.wait(len(rcpts))
        while server.queue.files.ids():  # finished: results recorded, files removed
            time.sleep(0.1)
        cpu = time.process_time() - cpu
        _, messages, senders, _, _ = sink.stats()
    finally:
        stop_server(server)
    name = {"": "ourmail", "verp": "ourmail, VERP", "single": "ourmail, 1 rcpt/transaction"}[mode]
    return Result(name, last - start, counted, messages, senders, cpu, queued, first - start)


@contextlib.contextmanager
def private_postfix(base: Path, sink_port: int) -> Iterator[Path]:
    """A Postfix in ``base`` relaying everything to the sink; yields its config directory."""
    for sub in ("conf", "queue", "data"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    shutil.chown(base / "data", "postfix")
    conf = base / "conf"
    (conf / "main.cf").write_text(MAIN_CF.format(base=base, port=sink_port))
    (conf / "master.cf").write_text(MASTER_CF)
    started = subprocess.run(["postfix", "-c", str(conf), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(f"postfix -c {conf} start failed: {started.stdout}{started.stderr}")
    try:
        while not (base / "queue" / "pid" / "master.pid").exists():
            time.sleep(0.1)
        yield conf
    finally:
        subprocess.run(["postfix", "-c", str(conf), "stop"], check=False, capture_output=True)


def postfix_queue_empty(conf: Path) -> bool:
    listing = subprocess.run(
        ["postqueue", "-c", str(conf), "-j"], capture_output=True, text=True, check=False
    )
    return listing.returncode == 0 and not listing.stdout.strip()


def run_postfix(sink: Sink, rcpts: list[str], message: bytes, mode: str, work: Path) -> Result:
    """``mode``: "" or "verp" (XVERP)."""
    verp = mode == "verp"
    with private_postfix(work, sink.port) as conf:
        sink.reset()
        base = work
        cpu, start = cpu_seconds(base), time.time()
        flags = ["-XV"] if verp else []
        subprocess.run(
            ["sendmail", "-C", str(conf), "-i", "-f", SENDER, *flags, "--", *rcpts],
            input=message,
            check=True,
        )
        queued = time.time() - start
        counted, _, _, first, last = sink.wait(len(rcpts))
        while not postfix_queue_empty(conf):
            time.sleep(0.2)
        cpu = cpu_seconds(base) - cpu
        _, messages, senders, _, _ = sink.stats()
    name = "Postfix, XVERP" if verp else "Postfix"
    return Result(name, last - start, counted, messages, senders, cpu, queued, first - start)


def table(results: list[Result]) -> str:
    lines = [
        "| run | recipients | transactions | senders | hand-off s | first RCPT s | last RCPT s"
        " | recipients/s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rate = r.rcpts / r.seconds if r.seconds > 0 else 0.0
        lines.append(
            f"| {r.name} | {r.rcpts:,} | {r.messages:,} | {r.senders:,} | {r.queued:.2f}"
            f" | {r.first:.2f} | {r.seconds:.2f} | {rate:,.0f} | {r.cpu:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="1,000 recipients, 10 domains")
    parser.add_argument("--verp", action="store_true", help="ourmail with VERP as well")
    parser.add_argument("--single", action="store_true", help="ourmail, 1 rcpt/transaction")
    parser.add_argument("--no-postfix", action="store_true", help="ourmail only")
    args = parser.parse_args()
    if args.quick:
        args.recipients, args.domains = 1000, 10
    if args.verp and "verp" not in inspect.signature(OutboundQueue.enqueue).parameters:
        sys.exit("--verp: this branch's OutboundQueue.enqueue has no verp (issue 19's wiring)")
    runs = [(run_ourmail, "")] + [(run_ourmail, m) for m in ("verp", "single") if vars(args)[m]]
    if not args.no_postfix:
        if not installed():
            sys.exit("Postfix is not installed (see bench/postfix_peer.py); or --no-postfix")
        runs += [(run_postfix, ""), (run_postfix, "verp")]
    rcpts = recipients(args.recipients, args.domains)
    message = post()
    print(f"{len(message):,}-octet post to {len(rcpts):,} recipients in {args.domains} domains")
    sink = Sink(args.domains)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="lists-delivery-") as tmp:
            Path(tmp).chmod(0o755)  # Postfix's daemons run as postfix
            for i, (run, mode) in enumerate(runs):
                result = run(sink, rcpts, message, mode, Path(tmp) / str(i))
                print(f"  {result}", flush=True)
                results.append(result)
    finally:
        sink.close()
    print(table(results))


if __name__ == "__main__":
    main()
