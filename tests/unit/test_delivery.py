"""The one delivery module: recipient checks (RFC 3463 codes) and fan-out, on fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from ourmail.dsnparams import NO_MAIL_PARAMS, NO_RCPT_PARAMS, RcptParams
from ourmail.interfaces import (
    DirectoryUnavailable,
    ILocalDelivery,
    IOutboundQueue,
    Recipient,
    ShardMoving,
)
from ourmail.queue.runner import OutboundQueue
from ourmail.smtp.delivery import (
    DIRECTORY_DOWN,
    FULL,
    FULL_FOR_NOW,
    NO_QUEUE,
    RELAY_DENIED,
    UNKNOWN,
    Accepted,
    Delivery,
    Refusal,
    Transaction,
    refusal_of,
)

ALICE = Recipient("user", "alice@example.test")
BOB = Recipient("user", "bob@example.test")
TEAM = Recipient("alias", "team@example.test", ("alice@example.test", "bob@example.test"))
FORWARD = Recipient("alias", "fwd@example.test", ("alice@example.test",), ("x@far.test",))
FAR = Recipient("remote", "carol@far.test")
ALIAS_OF_ONE = Recipient("alias", "postmaster@example.test", ("alice@example.test",))
NOBODY = Recipient("unknown", "nobody@example.test")


class Directory:
    known = {r.address: r for r in (ALICE, BOB, TEAM, FORWARD, FAR, NOBODY)}
    down = False

    def lookup(self, address: str) -> Deferred[Recipient]:
        if self.down:
            return defer.fail(DirectoryUnavailable())
        return defer.succeed(self.known[address.lower()])


@attrs.define
class Mailbox:
    store: Store
    address: str

    def deliver(self, source: Any, folder: str = "INBOX", flags: Any = ()) -> Deferred[int]:
        if self.address in self.store.failing:
            return defer.fail(self.store.failing[self.address])
        self.store.delivered.append((self.address, source))
        return defer.succeed(1)


@attrs.define
class Store:
    delivered: list[tuple[str, Any]] = attrs.Factory(list)
    failing: dict[str, Exception] = attrs.Factory(dict)

    def user(self, address: str) -> Mailbox:
        return Mailbox(self, address)


@attrs.define
class Quota:
    full: set[str] = attrs.Factory(set)
    permanent: bool = False

    def fits(self, user: Mailbox, extra_bytes: int = 0) -> bool:
        return user.address not in self.full


@attrs.define
class Queue:
    queued: list[tuple[str, list[tuple[str, RcptParams]]]] = attrs.Factory(list)
    reports: list[list[tuple[str, RcptParams]]] = attrs.Factory(list)
    broken: bool = False

    forwarded: list[bool] = attrs.Factory(list)

    def enqueue(
        self, sender: str, recipients: Any, *rest: Any, forwarded: bool = False
    ) -> Deferred[str]:
        if self.broken:
            return defer.fail(OSError("disk full"))
        self.queued.append((sender, list(recipients)))
        self.forwarded.append(forwarded)
        return defer.succeed("q1")

    def report_delivered(self, sender: str, params: Any, arrival: float, content: Any, here: Any):
        self.reports.append(list(here))
        return defer.succeed(None)


def delivery(queue: Queue | None = None, **quota: Any) -> tuple[Delivery, Store]:
    store = Store()
    d = Delivery(Directory(), store, Quota(**quota), queue)  # type: ignore[arg-type]
    d.stepwise = at_once  # the fakes are quick: all steps at once, no reactor needed
    return d, store


def at_once(steps: Any) -> Deferred[object]:
    for _ in steps:
        pass
    return defer.succeed(None)


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred did not fire"
    if isinstance(out[0], Exception | defer.Failure):
        out[0].raiseException()
    return out[0]


def txn(*rcpts: Recipient, params: RcptParams = NO_RCPT_PARAMS) -> Transaction:
    return Transaction(
        "id1", "s@else.test", [Accepted(r, params) for r in rcpts], NO_MAIL_PARAMS, False, 10
    )


def test_interfaces() -> None:
    assert verifyObject(ILocalDelivery, delivery()[0])
    assert IOutboundQueue.implementedBy(OutboundQueue)


@pytest.mark.parametrize(
    ("rcpt", "may_relay", "queue", "full", "permanent", "expected"),
    [
        (ALICE, False, None, set(), False, None),
        (NOBODY, True, Queue(), set(), False, UNKNOWN),
        (FAR, False, Queue(), set(), False, RELAY_DENIED),  # never an open relay
        (FAR, True, Queue(), set(), False, None),
        (FAR, True, None, set(), False, NO_QUEUE),
        (FORWARD, True, None, set(), False, NO_QUEUE),
        (ALICE, False, None, {"alice@example.test"}, False, FULL_FOR_NOW),  # RFC 3463 4.2.2
        (ALICE, False, None, {"alice@example.test"}, True, FULL),  # 5.2.2 when configured
        (ALIAS_OF_ONE, False, None, {"alice@example.test"}, True, FULL),
        # A group's members are checked at delivery, each on their own (below).
        (TEAM, False, None, {"bob@example.test"}, True, None),
        (FORWARD, True, Queue(), {"alice@example.test"}, True, None),
    ],
)
def test_check(rcpt, may_relay, queue, full, permanent, expected) -> None:  # type: ignore[no-untyped-def]
    d, _ = delivery(queue, full=full, permanent=permanent)
    assert d.check(rcpt, 100, may_relay) == expected


def test_resolve_directory_down_is_temporary() -> None:
    d, _ = delivery()
    d.directory.down = True  # type: ignore[attr-defined]
    refusal = result(d.resolve("alice@example.test", 0, False))
    assert refusal == DIRECTORY_DOWN and (refusal.code, refusal.status) == (451, "4.4.3")
    d.directory.down = False  # type: ignore[attr-defined]
    assert result(d.resolve("alice@example.test", 0, False)) == ALICE


def test_one_copy_per_mailbox_and_forwards_queued_with_orcpt() -> None:
    queue = Queue()
    d, store = delivery(queue)
    results = result(d.deliver(txn(ALICE, TEAM, FORWARD, FAR), b"msg"))
    assert [r.ok for r in results] == [True] * 4
    assert sorted(a for a, _ in store.delivered) == ["alice@example.test", "bob@example.test"]
    # One durable enqueue for the addresses elsewhere, one for the alias's forwards (marked
    # forwarded: the queue signs them as their forwarder, not their author).
    by_kind = dict(zip(queue.forwarded, queue.queued, strict=True))
    assert by_kind[False] == ("s@else.test", [("carol@far.test", NO_RCPT_PARAMS)])
    assert by_kind[True] == (
        "s@else.test",
        [("x@far.test", RcptParams(None, "rfc822;fwd@example.test"))],  # RFC 3461 §4.2
    )


@attrs.define
class Sealer:
    """Puts a marker on top, or fails as a broken key or library would."""

    broken: bool = False
    sealed: list[object] = attrs.Factory(list)

    def seal(self, content: Any) -> Deferred[bytes]:
        self.sealed.append(content)
        if self.broken:
            return defer.fail(ValueError("no good"))
        return defer.succeed(b"ARC-Seal: i=1\r\n" + content)


@attrs.define
class RecordingQueue(Queue):
    contents: list[object] = attrs.Factory(list)

    def enqueue(
        self, sender: str, recipients: Any, content: Any, *rest: Any, forwarded: bool = False
    ) -> Deferred[str]:
        self.contents.append(content)
        return super().enqueue(sender, recipients, content, *rest, forwarded=forwarded)


@pytest.mark.parametrize("broken", [False, True])
def test_forwards_are_sealed_and_a_sealing_failure_loses_nothing(broken: bool) -> None:
    queue = RecordingQueue()
    d, _ = delivery(queue)
    d.sealer = Sealer(broken)  # type: ignore[assignment]
    results = result(d.deliver(txn(FORWARD, FAR), b"msg"))
    assert [r.reply for r in results] == ["250 2.0.0 delivered"] * 2
    sealed = b"msg" if broken else b"ARC-Seal: i=1\r\nmsg"
    by_kind = dict(zip(queue.forwarded, queue.contents, strict=True))
    assert by_kind == {False: b"msg", True: sealed}  # the address elsewhere is not sealed


def test_a_logged_in_users_forwards_are_the_users_own_mail() -> None:
    queue = RecordingQueue()
    d, _ = delivery(queue)
    sealer = Sealer()
    d.sealer = sealer  # type: ignore[assignment]
    own = attrs.evolve(txn(FORWARD), authenticated=True)
    assert [r.ok for r in result(d.deliver(own, b"msg"))] == [True]
    assert sealer.sealed == [] and queue.contents == [b"msg"] and queue.forwarded == [False]


def test_results_per_recipient() -> None:
    """LMTP answers each recipient (RFC 2033 §4.2): one mailbox failing fails only the
    recipients that lead to it."""
    queue = Queue()
    d, store = delivery(queue)
    store.failing["bob@example.test"] = ShardMoving()
    results = result(d.deliver(txn(ALICE, BOB, TEAM, FAR), b"msg"))
    assert [(r.address, r.code, r.status) for r in results] == [
        ("alice@example.test", 250, "2.0.0"),
        ("bob@example.test", 451, "4.2.1"),
        ("team@example.test", 451, "4.2.1"),
        ("carol@far.test", 250, "2.0.0"),
    ]
    store.failing["bob@example.test"] = OSError("no space")
    queue.broken = True
    results = result(d.deliver(txn(ALICE, BOB, FAR), b"msg"))
    assert [r.status for r in results] == ["2.0.0", "4.3.0", "4.3.0"]


def test_success_report_only_for_final_delivery_here() -> None:
    queue = Queue()
    d, _ = delivery(queue)
    result(d.report_success(txn(ALICE, FORWARD, FAR), b"msg"))
    assert queue.reports == [[("alice@example.test", NO_RCPT_PARAMS)]]


def test_deliver_queued_keeps_order_and_queued_spelling(tmp_path: Path) -> None:
    queue = Queue()
    d, store = delivery(queue, full={"bob@example.test"}, permanent=True)
    recipients = [
        ("Alice@Example.test", NO_RCPT_PARAMS),
        ("nobody@example.test", NO_RCPT_PARAMS),
        ("bob@example.test", NO_RCPT_PARAMS),
        ("fwd@example.test", RcptParams(frozenset({"SUCCESS"}))),
    ]
    message = tmp_path / "m"
    results = result(d.deliver_queued("q", "", recipients, message, 5, NO_MAIL_PARAMS, False))
    assert [(r.address, r.reply) for r in results] == [
        ("Alice@Example.test", "250 2.0.0 delivered"),
        ("nobody@example.test", "550 5.1.1 Recipient address rejected: User unknown"),
        ("bob@example.test", "552 5.2.2 Mailbox full"),
        ("fwd@example.test", "250 2.0.0 delivered"),
    ]
    assert store.delivered == [("alice@example.test", message)]  # one copy for both
    assert queue.queued == [
        ("", [("x@far.test", RcptParams(frozenset({"SUCCESS"}), "rfc822;fwd@example.test"))])
    ]


def test_refusal_result() -> None:
    assert Refusal(452, "4.2.2", "Mailbox full").result("a@b").reply == "452 4.2.2 Mailbox full"


@attrs.define
class ForwardsFail(Queue):
    """Takes mail for addresses elsewhere, fails an alias's forwards (a full disk, say)."""

    def enqueue(
        self, sender: str, recipients: Any, *rest: Any, forwarded: bool = False
    ) -> Deferred[str]:
        if forwarded:
            return defer.fail(OSError("disk full"))
        return super().enqueue(sender, recipients, *rest, forwarded=forwarded)


def test_a_failed_enqueue_fails_only_its_own_recipients() -> None:
    d, _ = delivery(ForwardsFail())
    results = result(d.deliver(txn(FAR, FORWARD), b"msg"))
    assert [r.code for r in results] == [250, 451]  # carol was queued; the forward was not


@pytest.mark.parametrize("permanent", [False, True])
def test_a_full_member_does_not_refuse_the_group(permanent: bool) -> None:
    """Finding: one full mailbox refused (or held back) the mail for every member; now the
    others get their copies, and the group is refused only when no member can take it."""
    queue = Queue()
    d, store = delivery(queue, full={"bob@example.test"}, permanent=permanent)
    results = result(d.deliver(txn(TEAM, FORWARD), b"msg"))
    assert [r.ok for r in results] == [True, True]
    assert [a for a, _ in store.delivered] == ["alice@example.test"]
    assert queue.queued[0][1][0][0] == "x@far.test"
    d.quota.full = {"alice@example.test", "bob@example.test"}  # type: ignore[attr-defined]
    store.delivered.clear()
    team, fwd = result(d.deliver(txn(TEAM, FORWARD), b"msg"))
    assert (team.code, team.status) == ((552, "5.2.2") if permanent else (452, "4.2.2"))
    assert fwd.ok and store.delivered == []  # the forward still leaves


@attrs.define
class Lists:
    """A list intake: ``list@example.test`` and its ``-request`` address, 1000 octets at most."""

    broken: bool = False
    accepted: list[tuple[Any, Any]] = attrs.Factory(list)

    def handles(self, address: str) -> bool:
        return address in ("list@example.test", "list-request@example.test")

    def refusal(self, address: str, size: int) -> str | None:
        return "552 5.3.4 Message too big for this list" if size > 1000 else None

    def accept(self, arrival: Any, source: Any) -> Deferred[None]:
        if self.broken:
            return defer.fail(OSError("disk full"))
        self.accepted.append((arrival, source))
        return defer.succeed(None)


def test_list_addresses_go_to_the_list_intake() -> None:
    queue = Queue()
    d, store = delivery(queue)
    d.lists = Lists()  # type: ignore[assignment]
    listed = result(d.resolve("List@example.test", 100, False, "s@else.test"))
    assert listed == Recipient("list", "list@example.test")  # never a relay; one spelling
    too_big = result(d.resolve("list@example.test", 5000, False))
    assert (too_big.code, too_big.status) == (552, "5.3.4")
    assert result(d.resolve("alice@example.test", 5000, False)) == ALICE
    request = Recipient("list", "list-request@example.test")
    results = result(d.deliver(txn(listed, ALICE, request, FAR), b"msg"))
    assert [r.reply for r in results] == ["250 2.0.0 delivered"] * 4
    arrivals = [a for a, _ in d.lists.accepted]  # type: ignore[attr-defined]
    assert [(a.address, a.sender, a.id, a.size) for a in arrivals] == [
        ("list@example.test", "s@else.test", "id1", 10),
        ("list-request@example.test", "s@else.test", "id1", 10),
    ]
    assert [a for a, _ in store.delivered] == ["alice@example.test"]
    assert queue.queued == [("s@else.test", [("carol@far.test", NO_RCPT_PARAMS)])]


def test_a_failing_list_intake_fails_only_its_recipients() -> None:
    d, _ = delivery(Queue())
    d.lists = Lists(broken=True)  # type: ignore[assignment]
    listed = Recipient("list", "list@example.test")
    results = result(d.deliver(txn(ALICE, listed, FAR), b"msg"))
    assert [(r.code, r.status) for r in results] == [(250, "2.0.0"), (451, "4.3.0"), (250, "2.0.0")]


def test_a_message_too_big_for_a_list_is_refused_whole_before_anything_is_kept() -> None:
    """The client did not announce the size (no SIZE at MAIL FROM): the list's refusal of
    the real size refuses every recipient, and no copy is stored, queued or spooled."""
    queue = Queue()
    d, store = delivery(queue)
    d.lists = Lists()  # type: ignore[assignment]
    big = attrs.evolve(txn(ALICE, Recipient("list", "list@example.test"), FAR), size=5000)
    results = result(d.deliver(big, b"msg"))
    assert [r.reply for r in results] == ["552 5.3.4 Message too big for this list"] * 3
    assert store.delivered == [] and queue.queued == [] and d.lists.accepted == []  # type: ignore[attr-defined]


def test_refusal_of_a_reply() -> None:
    assert refusal_of("552 5.3.4 too big") == Refusal(552, "5.3.4", "too big")
    assert refusal_of("450 try later") == Refusal(450, "4.0.0", "try later")
    assert refusal_of("nonsense") == Refusal(550, "5.0.0", "nonsense")
    assert refusal_of("552 4.3.4 mixed\r\n classes") == Refusal(552, "5.0.0", "mixed classes")


def test_a_list_named_twice_gets_one_arrival() -> None:
    d, _ = delivery()
    d.lists = Lists()  # type: ignore[assignment]
    listed = Recipient("list", "list@example.test")
    assert [r.code for r in result(d.deliver(txn(listed, listed), b"msg"))] == [250, 250]
    assert len(d.lists.accepted) == 1  # type: ignore[attr-defined]
