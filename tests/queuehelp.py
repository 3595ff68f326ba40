"""Two ourmail servers on loopback that mail each other through their outbound queues.

``ours`` serves example.test on 127.0.0.1 and ``theirs`` serves remote.test on 127.0.0.2, both
with the MX listener on one common port (the queues' ``smtp_port``), found through the tests'
DNS server: ``remote.test MX 10 mx.remote.test``, ``mx.remote.test A 127.0.0.2`` and the like.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from conftest import RunningServer, client_tls, dns_zone, running_server
from peers.dns import free_port_on
from storehelp import on_reactor

from ourmail.config import SERVICES, QueueSettings


@attrs.define
class Pair:
    ours: RunningServer
    theirs: RunningServer
    port: int


@contextlib.contextmanager
def server_pair(
    tmp_path: Path,
    queue: QueueSettings | None = None,
    clock: Any = None,
    theirs_changes: dict[str, Any] | None = None,
    **changes: Any,
) -> Iterator[Pair]:
    zone, _ = dns_zone()
    port = free_port_on("127.0.0.1", "127.0.0.2", "127.0.0.4", "::1")  # .4, ::1: other peers
    queue = attrs.evolve(queue or QueueSettings(), smtp_port=port)
    zone.set_mx("example.test", [(10, "mail.example.test")])
    zone.set_address("mail.example.test", "127.0.0.1")
    zone.set_mx("remote.test", [(10, "mx.remote.test")])
    zone.set_address("mx.remote.test", "127.0.0.2")
    with (
        running_server(
            tmp_path / "ours",
            listen={"smtp": f"tcp:{port}:interface=127.0.0.1"},
            queue=queue,
            queue_clock=clock,
            **changes,
        ) as ours,
        running_server(
            tmp_path / "theirs",
            listen={svc: "tcp:0:interface=127.0.0.2" for svc in SERVICES}
            | {"smtp": f"tcp:{port}:interface=127.0.0.2"},
            domain="remote.test",
            hostname="mx.remote.test",
            queue=attrs.evolve(QueueSettings(), smtp_port=port),
            **(theirs_changes or {}),
        ) as theirs,
    ):
        theirs.add_user("carol@remote.test")
        yield Pair(ours, theirs, port)


def submit(
    srv: RunningServer,
    rcpts: list[str],
    body: bytes = b"Subject: hello\r\n\r\nHi there\r\n",
    mail_options: tuple[str, ...] = (),
    rcpt_options: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Send as the server's test user on the submissions port."""
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), context=client_tls()) as s:
        s.login(srv.user, srv.password)
        message = f"From: <{srv.user}>\r\n".encode() + body
        return s.sendmail(srv.user, rcpts, message, list(mail_options), list(rcpt_options))


def messages(srv: RunningServer, address: str) -> list[email.message.EmailMessage]:
    """The INBOX of ``address``, parsed."""
    root = srv.server.store.shards.user_dir(address)
    found = []
    for sub in ("new", "cur"):
        d = root / sub
        if d.exists():
            found += sorted(d.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in found
    ]


def wait_for(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def queued(srv: RunningServer) -> list[str]:
    return srv.server.queue.files.ids()


def settle(srv: RunningServer) -> None:
    """Wait until the queue runner has no attempt running."""
    on_reactor(srv.server.queue.when_idle)


def advance(clock: Any, seconds: float, srv: RunningServer) -> None:
    """Move the queue clock on, run what became due, and wait for those attempts."""
    on_reactor(clock.advance, seconds)
    on_reactor(srv.server.queue.tick)
    settle(srv)


def report_fields(msg: email.message.EmailMessage) -> list[dict[str, str]]:
    """The message/delivery-status blocks of a DSN: per-message first, then per recipient."""
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    types = ("message/delivery-status", "message/global-delivery-status")
    status = next(p for p in msg.walk() if p.get_content_type() in types)
    payload = status.get_payload()
    if status.get_content_type() == "message/delivery-status":
        return [dict(block.items()) for block in payload]
    # message/global-delivery-status (RFC 6533) parses as one message: the per-message fields
    # are its header, the per-recipient blocks its body.
    (first,) = payload
    rest = first.get_payload().replace("\r\n", "\n").strip().split("\n\n")
    return [dict(first.items())] + [dict(email.message_from_string(b).items()) for b in rest]
