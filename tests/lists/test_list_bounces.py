"""Bounces (RFC 3464 reports to a list's -bounces address, scores, disabling, decay) and
daily digests (RFC 2046 §5.1.5), driven through the parts' ListContext."""

from __future__ import annotations

import email
import email.message
import email.policy
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from email.header import Header
from pathlib import Path
from typing import Any

import attrs
import pytest
from queuehelp import server_pair, submit, wait_for
from storehelp import on_reactor
from twisted.internet import defer
from twisted.internet.defer import Deferred

from ourmail.config import ListsSettings
from ourmail.dsnparams import MailParams, RcptParams
from ourmail.interfaces import ListArrival
from ourmail.lists import bounces, digest, requests, tokens
from ourmail.lists.context import ListContext
from ourmail.lists.listdb import ListDB
from ourmail.lists.model import Delivery, ListSettings, Member
from ourmail.queue.dsn import Original, RecipientStatus, build_report

HERE = Path(__file__).parent
START = 1_795_000_000.0  # Wednesday 18 November 2026, 11:06:40 UTC
DAY = 86400.0
LIST = ListSettings("team@example.test", owners=("owner@example.test",), bounce_limit=2)


@attrs.define
class Queued:
    sender: str
    recipients: list[str]
    content: bytes
    utf8: bool
    verp: bool
    personal: Mapping[str, bytes] | None


@attrs.define
class FakeQueue:
    """Records what is queued; ``fail_at``: the call number (from 1) that fails."""

    sent: list[Queued] = attrs.Factory(list)
    fail_at: int = 0
    calls: int = 0
    keys: dict[str, str] = attrs.Factory(dict)

    def enqueue(
        self,
        sender: str,
        recipients: Sequence[tuple[str, RcptParams]],
        content: bytes | os.PathLike[str],
        mail_params: MailParams,
        utf8: bool,
        forwarded: bool = False,
        verp: bool = False,
        personal: Mapping[str, bytes] | None = None,
        key: str = "",
    ) -> Deferred[str]:
        self.calls += 1
        if self.calls == self.fail_at:
            return defer.fail(OSError("queue disk full"))
        if key in self.keys:  # as the queue does: a key is queued once
            return defer.succeed(self.keys[key])
        if key:
            self.keys[key] = f"q{self.calls}"
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        self.sent.append(Queued(sender, [r for r, _ in recipients], data, utf8, verp, personal))
        return defer.succeed(f"q{self.calls}")


@attrs.define
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


def make_ctx(tmp_path: Path, members: Sequence[Member], lst: ListSettings = LIST) -> ListContext:
    db = ListDB(tmp_path / "lists.sqlite")
    db.create(lst, START)
    db.subscribe(lst.address, members)
    return ListContext(
        db=db,
        root=tmp_path,
        directory=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        queue=FakeQueue(),  # type: ignore[arg-type]
        settings=ListsSettings(batch=1),
        hostname="mail.example.test",
        web_url="https://mail.example.test",
        secret=b"k" * 32,
        clock=Clock(),
    )


def run(coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return on_reactor(lambda: Deferred.fromCoroutine(coro()))


def bounce(ctx: ListContext, data: bytes, to: str = "team-bounces@example.test") -> None:
    path = ctx.root / "arrival.eml"
    path.write_bytes(data)
    arrival = ListArrival(to, "", id="t1", arrival=ctx.clock(), size=len(data))
    run(lambda: bounces.handle(ctx, LIST, arrival, path))


def dsn(
    recipient: str, action: str = "failed", status: str = "5.1.1", original: bytes = b""
) -> bytes:
    content = original or b"From: <team@example.test>\r\nSubject: post\r\n\r\nhello\r\n"
    statuses = [RecipientStatus(f"rfc822;{recipient}", action, status, diagnostic="550 no")]
    return build_report(
        "mx.remote.test",
        "team-bounces@example.test",
        Original(None, START, None, content),
        statuses,
        START,
        10 * 1024 * 1024,
    )


def score(ctx: ListContext, address: str) -> Member:
    member = ctx.db.member(LIST.address, address)
    assert member is not None
    return member


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def test_hard_bounces_by_verp_count_once_a_day_then_disable_and_tell(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, [Member("bob@remote.test"), Member("amy@remote.test")])
    clock: Clock = ctx.clock  # type: ignore[assignment]
    queue: FakeQueue = ctx.queue  # type: ignore[assignment]
    verp = "team-bounces+bob=remote.test@example.test"
    # The report names another address: the VERP detail says whose bounce it is.
    bounce(ctx, dsn("bob@mx-internal.remote.test"), to=verp)
    assert score(ctx, "bob@remote.test").bounce_score == 1
    assert score(ctx, "bob@remote.test").last_bounce == START
    bounce(ctx, dsn("bob@remote.test"), to=verp)  # the same day: counted once
    assert score(ctx, "bob@remote.test").bounce_score == 1
    assert queue.sent == []

    clock.now += DAY
    bounce(ctx, dsn("bob@remote.test"), to=verp)
    bob = score(ctx, "bob@remote.test")
    assert (bob.bounce_score, bob.delivery, bob.disabled_by) == (2, Delivery.NONE, "bounces")
    assert score(ctx, "amy@remote.test").bounce_score == 0
    to_member, to_owner = queue.sent
    assert to_member.recipients == ["bob@remote.test"]
    assert to_member.sender == "team-bounces@example.test"
    notice = parsed(to_member.content)
    confirm = notice["Reply-To"].addresses[0].addr_spec
    token = confirm.split("+")[1].split("@")[0]
    text = notice.get_content()
    assert confirm.startswith("team-confirm+") and confirm in text
    assert f"https://mail.example.test/lists/confirm/{token}" in text
    assert notice["Auto-Submitted"] == "auto-generated"
    # The re-enabling confirmation is a subscribe token marked for it (requests.confirm).
    assert ctx.db.pending_tokens(LIST.address, "bob@remote.test", "subscribe", clock.now) == 1
    assert to_owner.recipients == ["owner@example.test"]
    assert "bob@remote.test" in parsed(to_owner.content)["Subject"]

    clock.now += DAY  # more bounces of a disabled member: counted, told nobody again
    bounce(ctx, dsn("bob@remote.test"), to=verp)
    assert score(ctx, "bob@remote.test").bounce_score == 3
    assert len(queue.sent) == 2

    # Confirming the token gives bob his delivery back, with a clean score.
    found = on_reactor(tokens.redeem, ctx, token)
    assert (found.action, found.data) == ("subscribe", "reenable:each")
    assert run(lambda: requests.confirm(ctx, LIST, found, "bob@remote.test")) == "reenabled"
    bob = score(ctx, "bob@remote.test")
    assert (bob.delivery, bob.disabled_by, bob.bounce_score) == (Delivery.EACH, "", 0)
    assert run(lambda: bounces.reenable(ctx, LIST, found, "")) == "already"


def test_a_counted_bounce_leaves_the_rest_of_the_member_as_it_is_now(tmp_path: Path) -> None:
    """The member was read before its bounce was counted; a delivery mode or name changed in
    between stands (only the score, its time and a disabling are written)."""
    ctx = make_ctx(tmp_path, [Member("bob@remote.test")])
    stale = score(ctx, "bob@remote.test")
    ctx.db.set_member(LIST.address, attrs.evolve(stale, delivery=Delivery.DIGEST, name="Bob"))
    run(lambda: bounces.count(ctx, LIST, stale))
    bob = score(ctx, "bob@remote.test")
    assert (bob.bounce_score, bob.last_bounce, bob.delivery, bob.name) == (
        1,
        START,
        Delivery.DIGEST,
        "Bob",
    )


def test_a_report_to_the_bare_address_counts_for_no_one(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, [Member("dave@other.test"), Member("eve@other.test")])
    data = (HERE / "bounces_postfix_dsn.eml").read_bytes().replace(b"\n", b"\r\n")
    # Without VERP the report's Final-Recipient is not trusted (anyone can write one).
    bounce(ctx, data)
    assert [score(ctx, a).bounce_score for a in ("dave@other.test", "eve@other.test")] == [0, 0]
    bounce(ctx, data, to="team-bounces+dave=other.test@example.test")
    assert [score(ctx, a).bounce_score for a in ("dave@other.test", "eve@other.test")] == [1, 0]
    # The score and the time of the bounce are in the database (a new reading sees them).
    again = ListDB(tmp_path / "lists.sqlite").member(LIST.address, "dave@other.test")
    assert again is not None and (again.bounce_score, again.last_bounce) == (1, ctx.clock())


def _nested(depth: int) -> bytes:
    head = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
    return b"To: x\r\n" + (b"--b\r\n" + head) * depth


@pytest.mark.parametrize(
    ("data", "counted"),
    [
        (dsn("bob@remote.test", "delayed", "4.4.1"), 0),
        (dsn("bob@remote.test", "failed", "4.2.2"), 0),
        (dsn("bob@remote.test", "delivered", "2.0.0"), 0),
        (dsn("bob@remote.test", "delayed", "5.1.1"), 0),  # not "failed"
        (
            b"From: bob@remote.test\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied"
            b"\r\n\r\nI am away until Monday.\r\n",
            0,
        ),
        (b"\x00\xff\r\n\r\n--\r\nContent-Type: multipart/report; boundary=\r\n\r\n" * 999, 0),
        (_nested(20_000), 0),
        # A huge returned message: only the first MiB is read, the report is before it.
        (
            dsn(
                "bob@remote.test", original=b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 9000
            ),
            1,
        ),
    ],
    ids=[
        "delayed",
        "transient",
        "delivered",
        "not-failed",
        "auto-reply",
        "garbage",
        "nested",
        "huge",
    ],
)
def test_what_counts_nothing(tmp_path: Path, data: bytes, counted: int) -> None:
    ctx = make_ctx(tmp_path, [Member("bob@remote.test")])
    bounce(ctx, data, to="team-bounces+bob=remote.test@example.test")
    assert score(ctx, "bob@remote.test").bounce_score == counted
    assert ctx.queue.sent == []  # type: ignore[attr-defined]


def test_decay_halves_quiet_scores_once_a_day(tmp_path: Path) -> None:
    quiet = Member("q@remote.test", bounce_score=4, last_bounce=START - 8 * DAY)
    recent = Member("r@remote.test", bounce_score=4, last_bounce=START - 2 * DAY)
    ctx = make_ctx(tmp_path, [quiet, recent])
    clock: Clock = ctx.clock  # type: ignore[assignment]
    seen = []
    for _ in range(4):
        seen.append(run(lambda: bounces.decay(ctx)))
        seen.append(run(lambda: bounces.decay(ctx)))  # the same day: nothing
        clock.now += DAY
    assert seen == [1, 0, 1, 0, 1, 0, 1, 0]
    assert score(ctx, "q@remote.test").bounce_score == 0  # 4, 2, 1, 0.5, then 0.25 forgotten
    # r: quiet for 7 days from START + 5 days on: halved once, on the sixth run
    assert score(ctx, "r@remote.test").bounce_score == 4
    run(lambda: bounces.decay(ctx))
    clock.now += DAY
    run(lambda: bounces.decay(ctx))
    assert score(ctx, "r@remote.test").bounce_score == 2


POSTS = [
    b"From: Anna <anna@example.test>\r\nSubject: minutes\r\n\r\nThe minutes.\r\n",
    f"From: {Header('Μαρία', 'utf-8').encode()} <maria@example.test>\r\n".encode()
    + f"Subject: {Header('ανακοίνωση', 'utf-8').encode()}\r\n".encode()
    + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "Καλημέρα.\r\n".encode(),
    b"From: bob@remote.test\r\n\r\nno subject\r\n",
]
DIGEST_MEMBERS = [
    Member("d1@remote.test", delivery=Delivery.DIGEST),
    Member("d2@remote.test", delivery=Delivery.DIGEST),
    Member("each@remote.test"),
    Member("off@remote.test", delivery=Delivery.NONE),
]


def test_daily_digest_is_one_multipart_digest_with_a_table_of_contents(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, DIGEST_MEMBERS)
    clock: Clock = ctx.clock  # type: ignore[assignment]
    queue: FakeQueue = ctx.queue  # type: ignore[assignment]
    for post in POSTS:
        run(lambda post=post: digest.add(ctx, LIST, post))
        clock.now += 60
    assert run(lambda: digest.send_due(ctx)) == 0  # not a day yet
    clock.now = START + DAY
    assert run(lambda: digest.send_due(ctx)) == 1
    assert run(lambda: digest.send_due(ctx)) == 0
    assert [q.recipients for q in queue.sent] == [["d1@remote.test"], ["d2@remote.test"]]
    first = queue.sent[0]
    assert first.verp and first.sender == "team-bounces@example.test"
    assert first.personal is not None
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in first.personal["d1@remote.test"]
    assert (
        b"/lists/unsubscribe/team%40example.test/d1%40remote.test/"
        in (first.personal["d1@remote.test"])
    )
    msg = parsed(first.content)
    assert msg.get_content_type() == "multipart/digest"
    assert msg["Subject"] == "team digest, issue 1"
    assert msg["List-Id"] == "team <team.example.test>"
    toc, *parts = msg.iter_parts()
    assert toc.get_content_type() == "text/plain"
    contents = toc.get_content()  # type: ignore[attr-defined]
    assert "Today's Topics:" in contents
    assert "1. minutes (Anna)" in contents and "2. ανακοίνωση (Μαρία)" in contents
    assert "3. (no subject) (bob@remote.test)" in contents
    assert [p.get_content_type() for p in parts] == ["message/rfc822"] * 3
    inner = parts[1].get_content()  # type: ignore[attr-defined]
    assert inner.get_content().strip() == "Καλημέρα."
    assert not list((tmp_path / "digest" / LIST.address / "posts").iterdir())
    # The next day's digest is issue 2.
    run(lambda: digest.add(ctx, LIST, POSTS[0]))
    clock.now += DAY
    assert run(lambda: digest.send_due(ctx)) == 1
    assert parsed(queue.sent[-1].content)["Subject"] == "team digest, issue 2"


def test_a_digest_interrupted_by_a_failure_goes_on_where_it_stopped(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, DIGEST_MEMBERS)
    clock: Clock = ctx.clock  # type: ignore[assignment]
    queue: FakeQueue = ctx.queue  # type: ignore[assignment]
    run(lambda: digest.add(ctx, LIST, POSTS[0]))
    clock.now += DAY
    queue.fail_at = 2  # the second batch cannot be queued
    assert run(lambda: digest.send_due(ctx)) == 0
    assert [q.recipients for q in queue.sent] == [["d1@remote.test"]]
    run(lambda: digest.add(ctx, LIST, POSTS[2]))  # a post after the issue was built
    assert run(lambda: digest.send_due(ctx)) == 2  # issue 1 finished, then issue 2 at once
    recipients = [(q.recipients, parsed(q.content)["Subject"]) for q in queue.sent]
    assert recipients == [
        (["d1@remote.test"], "team digest, issue 1"),
        (["d2@remote.test"], "team digest, issue 1"),
        (["d1@remote.test"], "team digest, issue 2"),
        (["d2@remote.test"], "team digest, issue 2"),
    ]


def test_a_resumed_digest_goes_to_the_members_it_was_built_for(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, DIGEST_MEMBERS)
    clock: Clock = ctx.clock  # type: ignore[assignment]
    queue: FakeQueue = ctx.queue  # type: ignore[assignment]
    run(lambda: digest.add(ctx, LIST, POSTS[0]))
    clock.now += DAY
    queue.fail_at = 2  # stopped after the first batch (d1), as a crash would
    assert run(lambda: digest.send_due(ctx)) == 0
    # Meanwhile d2 leaves and d0 chooses the digest: the issue still goes to d2 alone.
    ctx.db.unsubscribe(LIST.address, ["d2@remote.test"])
    ctx.db.subscribe(LIST.address, [Member("d0@remote.test", delivery=Delivery.DIGEST)])
    assert run(lambda: digest.send_due(ctx)) == 1
    assert [q.recipients for q in queue.sent] == [["d1@remote.test"], ["d2@remote.test"]]


def test_a_digest_batch_queued_just_before_a_crash_goes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(tmp_path, DIGEST_MEMBERS)
    clock: Clock = ctx.clock  # type: ignore[assignment]
    queue: FakeQueue = ctx.queue  # type: ignore[assignment]
    run(lambda: digest.add(ctx, LIST, POSTS[0]))
    clock.now += DAY
    save = digest._save
    crashed: list[int] = []

    def crash_once(where: Path, state: digest.State) -> None:
        if state.done == 1 and not crashed:
            crashed.append(1)  # the first batch is queued; the server stops before the mark
            raise OSError("power cut")
        save(where, state)

    monkeypatch.setattr(digest, "_save", crash_once)
    assert run(lambda: digest.send_due(ctx)) == 0
    assert run(lambda: digest.send_due(ctx)) == 1
    assert crashed and [q.recipients for q in queue.sent] == [
        ["d1@remote.test"],
        ["d2@remote.test"],
    ]


def test_a_real_bounce_from_a_second_server_raises_the_score_and_disables(
    tmp_path: Path,
) -> None:
    """Their server refuses an unknown member at RCPT; our queue writes the DSN.  (Until the
    list wiring is merged the DSN goes to the sending user, and the handler gets it as it
    would arrive at the member's VERP address.)"""
    with server_pair(tmp_path) as pair:
        for n in range(2):
            assert (
                submit(pair.ours, ["nobody@remote.test"], f"Subject: {n}\r\n\r\nhi\r\n".encode())
                == {}
            )
        root = pair.ours.server.store.shards.user_dir(pair.ours.user)

        def arrived() -> list[Path] | None:
            files = [p for d in ("new", "cur") for p in (root / d).glob("*")]
            return files if len(files) == 2 else None

        reports = [p.read_bytes() for p in wait_for(arrived)]
    ctx = make_ctx(tmp_path / "lists", [Member("nobody@remote.test")])
    clock: Clock = ctx.clock  # type: ignore[assignment]
    for report in reports:
        assert parsed(report).get_content_type() == "multipart/report"
        bounce(ctx, report, to="team-bounces+nobody=remote.test@example.test")
        clock.now += DAY
    member = score(ctx, "nobody@remote.test")
    assert (member.bounce_score, member.delivery) == (2, Delivery.NONE)
    assert ctx.queue.sent[0].recipients == ["nobody@remote.test"]  # type: ignore[attr-defined]


def test_the_notices_speak_the_lists_language(tmp_path: Path) -> None:
    greek = attrs.evolve(LIST, language="el", bounce_limit=1)
    ctx = make_ctx(tmp_path, [Member("bob@remote.test")], greek)
    path = tmp_path / "arrival.eml"
    path.write_bytes(dsn("bob@remote.test"))
    arrival = ListArrival("team-bounces+bob=remote.test@example.test", "")
    run(lambda: bounces.handle(ctx, greek, arrival, path))
    to_member, to_owner = ctx.queue.sent  # type: ignore[attr-defined]
    assert parsed(to_member.content)["Subject"].endswith("της λίστας team σε εσάς απενεργοποιήθηκε")
    assert "λόγω επιστροφών" in parsed(to_owner.content)["Subject"]
