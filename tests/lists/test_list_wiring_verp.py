"""The queue's VERP (issue 19): one transaction per recipient with its own return path, each
copy with its own header fields under its own DKIM signature (RFC 8058 §4), local copies
too, and the queue's DSNs back to the failed recipient's VERP sender, where a mailing
list's intake (``Delivery.lists``) takes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import dkim
from queuehelp import messages, queued, server_pair, wait_for
from storehelp import on_reactor
from twisted.internet import defer
from twisted.internet.defer import Deferred

from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS
from ourmail.interfaces import ListArrival
from ourmail.secure.dkimkeys import KeyStore

LIST = "list-bounces@example.test"
MESSAGE = (
    b"From: Team <list@example.test>\r\nTo: list@example.test\r\nSubject: news\r\n"
    b"Message-ID: <post1@example.test>\r\nList-Id: <list.example.test>\r\n\r\n"
    b"Hello members\r\n.a line with a dot\r\n"
)
REMOTE = ["carol@remote.test", "bob@remote.test", "dave@remote.test"]


def personal(address: str) -> bytes:
    return (
        f"List-Unsubscribe: <https://mail.example.test/lists/unsubscribe/{address}>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    ).encode()


@attrs.define
class Intake:
    """A list manager that takes the list's bounce addresses."""

    arrivals: list[tuple[ListArrival, bytes]] = attrs.Factory(list)

    def handles(self, address: str) -> bool:
        return address.startswith("list-bounces+") and address.endswith("@example.test")

    def refusal(self, address: str, size: int) -> str | None:
        return None

    def accept(self, arrival: ListArrival, source: Any) -> Deferred[None]:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.arrivals.append((arrival, data))
        return defer.succeed(None)


def raw(srv: Any, address: str) -> list[bytes]:
    root = srv.server.store.shards.user_dir(address)
    return [
        p.read_bytes()
        for sub in ("new", "cur")
        if (root / sub).exists()
        for p in (root / sub).iterdir()
    ]


def test_verp_envelope_one_return_path_each_and_dsn_to_its_verp_sender(tmp_path: Path) -> None:
    with server_pair(tmp_path) as pair:
        ours, theirs = pair.ours, pair.theirs
        for address in REMOTE[1:]:
            theirs.add_user(address)
        key = KeyStore(ours.data / "dkim").generate("example.test", "v", "ed25519")
        intake = Intake()
        ours.server.queue.local.lists = intake  # type: ignore[assignment]
        senders: list[tuple[str, list[str]]] = []
        deliver = theirs.server.queue.local.deliver

        def recording(txn: Any, source: Any) -> Any:
            senders.append((txn.sender, [a.recipient.address for a in txn.recipients]))
            return deliver(txn, source)

        theirs.server.queue.local.deliver = recording  # type: ignore[method-assign]
        here: list[tuple[str, list[str]]] = []
        deliver_queued = ours.server.queue.local.deliver_queued

        def recording_here(qid: str, sender: str, rcpts: Any, *rest: Any) -> Any:
            here.append((sender, [a for a, _ in rcpts]))
            return deliver_queued(qid, sender, rcpts, *rest)

        ours.server.queue.local.deliver_queued = recording_here  # type: ignore[method-assign]
        ours.add_user("dan@example.test")
        rcpts = [*REMOTE, "nobody@remote.test", ours.user, "dan@example.test"]
        on_reactor(
            ours.server.queue.enqueue,
            LIST,
            [(a, NO_RCPT_PARAMS) for a in rcpts],
            MESSAGE,
            NO_MAIL_PARAMS,
            False,
            False,
            True,
            {a: personal(a) for a in rcpts},
        )
        for address in REMOTE:
            wait_for(lambda a=address: raw(theirs, a))
        (dsn_arrival, dsn) = wait_for(lambda: intake.arrivals)[0]
        wait_for(lambda: not queued(ours))

        # Three transactions at the second server, each with its member's return path.
        assert sorted(senders) == sorted(
            (f"list-bounces+{a.replace('@', '=')}@example.test", [a]) for a in REMOTE
        )
        records = {b"v._domainkey.example.test.": key.txt().encode()}
        for address in REMOTE:
            (copy,) = raw(theirs, address)
            assert personal(address) in copy and copy.endswith(MESSAGE.split(b"\r\n\r\n")[1])
            assert copy.count(b"List-Unsubscribe:") == 1  # no one else's
            assert dkim.verify(copy, dnsfunc=lambda name, timeout=5: records.get(name))
            signature = copy[copy.index(b"DKIM-Signature:") :].split(b"bh=")[0]
            assert b"list-unsubscribe" in signature.replace(b"\r\n", b"").replace(b" ", b"")

        # The local members: each its own transaction and copy, with its own fields.
        assert sorted(here) == [
            ("", ["list-bounces+nobody=remote.test@example.test"]),  # the DSN, below
            ("list-bounces+alice=example.test@example.test", [ours.user]),
            ("list-bounces+dan=example.test@example.test", ["dan@example.test"]),
        ]
        (dans,) = wait_for(lambda: raw(ours, "dan@example.test"))
        assert personal("dan@example.test") in dans and personal(ours.user) not in dans
        (mine,) = raw(ours, ours.user)
        assert (
            personal(ours.user) in mine
            and b"List-Unsubscribe: <https://mail.example.test/lists/unsubscribe/carol" not in mine
        )
        assert messages(ours, ours.user)[0]["Subject"] == "news"

        # The failed member's DSN went to its VERP address, where the list takes it.
        assert dsn_arrival.address == "list-bounces+nobody=remote.test@example.test"
        assert dsn_arrival.sender == ""
        assert b"Final-Recipient: rfc822;nobody@remote.test" in dsn
        assert len(intake.arrivals) == 1
