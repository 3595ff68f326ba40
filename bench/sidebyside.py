"""Shared by the Dovecot comparisons: one mailbox, written by ourmail, served by ourmail and then
by Debian's Dovecot (on an exact ``cp -a`` copy), the same client operations timed against each,
and the table of ourmail / Dovecot ratios."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import start_server, stop_server
from peers.dovecot import dovecot
from store import SECRET, deliver

from ourmail.auth.passwords import hash_password

USER = "user@bench.test"


def _serve(protocol: str, base: Path, messages: int, pipe: Connection) -> None:
    """The child process: ourmail with ``messages`` delivered; sends (port, the user's
    directory, seconds the delivery took), then serves until the parent says stop."""
    server, port = start_server(base / "data", protocol)
    server.accounts.add_user(USER, hash_password(SECRET))
    took = deliver(server.store, [USER], messages, 64)
    pipe.send((port, str(server.store.shards.user_dir(USER)), took))
    pipe.recv()
    stop_server(server)


def compare(
    protocol: str, messages: int, operations: Callable[[int], dict[str, float]], where: str
) -> None:
    """Deliver ``messages`` 4 KB messages, run ``operations(port)`` against ourmail's and then
    Dovecot's ``protocol`` (``imap`` or ``pop3``) listener, and print both with the ratio.

    ourmail runs in a process of its own, as Dovecot does, so the client's work never waits
    for the server's interpreter lock (or the other way round)."""
    base = Path(tempfile.mkdtemp(prefix=f"ourmail-{protocol}-bench-", dir="/var/tmp"))
    here, there = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=_serve, args=(protocol, base, messages, there)
    )
    child.start()
    port, user_dir, took = here.recv()
    snapshot = base / "snapshot"
    subprocess.run(["cp", "-a", user_dir, str(snapshot)], check=True)
    ours = operations(port)
    here.send("stop")
    child.join()
    tls = (base / "data" / "tls" / "cert.pem", base / "data" / "tls" / "key.pem")
    with dovecot(snapshot, USER, SECRET, tls, argon2=True, protocol=protocol) as (dport, _):
        theirs = operations(dport)
    print(f"{messages} messages of 4 KB {where} (delivered in {took:.1f} s)")
    width = max(len(name) for name in ours) + 2
    print(f"{'operation':<{width}}{'ourmail':>10}{'Dovecot':>10}{'ratio':>8}")
    for name, t in ours.items():
        d = theirs[name]
        print(f"{name:<{width}}{t * 1000:>8.2f}ms{d * 1000:>8.2f}ms{t / d:>7.1f}x")
    shutil.rmtree(base, ignore_errors=True)
