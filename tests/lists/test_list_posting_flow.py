"""Posting decisions, moderation and distribution (ourmail/lists/posting.py, moderation.py,
distribute.py) with the real list database and a recording queue, store and directory."""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import os
import threading
import types
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
from storehelp import on_reactor
from twisted.internet import defer
from twisted.internet.defer import Deferred

from ourmail.config import ListsSettings
from ourmail.dsnparams import MailParams, RcptParams
from ourmail.interfaces import ListArrival, Recipient
from ourmail.lists import digest, distribute, moderation, posting, rewrite, tokens
from ourmail.lists.context import ListContext
from ourmail.lists.listdb import ListDB
from ourmail.lists.model import Delivery, ListSettings, Member

T = TypeVar("T")
TEAM = ListSettings(
    "team@example.test",
    name="Team",
    owners=("owner@example.test",),
    moderators=("mod@example.test",),
    group="staff@example.test",
    max_size=10_000,
    digest=True,
)


@attrs.define
class Queued:
    sender: str
    recipients: list[str]
    content: bytes
    verp: bool
    forwarded: bool
    personal: dict[str, bytes]


@attrs.define
class FakeQueue:
    queued: list[Queued] = attrs.Factory(list)
    fail_at: int | None = None

    def enqueue(
        self,
        sender: str,
        recipients: Sequence[tuple[str, RcptParams]],
        content: bytes | os.PathLike[str],
        mail_params: MailParams,
        utf8: bool,
        forwarded: bool = False,
        verp: bool = False,
        personal: dict[str, bytes] | None = None,
        key: str = "",
    ) -> Deferred[str]:
        if verp and self.fail_at is not None and len(self.posts) == self.fail_at:
            self.fail_at = None
            return defer.fail(OSError("disk full"))
        assert isinstance(content, bytes)
        rcpts = [r for r, _ in recipients]
        self.queued.append(Queued(sender, rcpts, content, verp, forwarded, dict(personal or {})))
        return defer.succeed(f"q{len(self.queued)}")

    @property
    def posts(self) -> list[Queued]:
        return [q for q in self.queued if q.verp]

    @property
    def notices(self) -> list[Queued]:
        return [q for q in self.queued if not q.verp]


@attrs.define
class FakeUser:
    delivered: list[bytes]

    def deliver(self, source: bytes, folder: str = "INBOX", flags: Any = ()) -> Deferred[int]:
        self.delivered.append(source)
        return defer.succeed(len(self.delivered))


@attrs.define
class FakeStore:
    archive: dict[str, list[bytes]] = attrs.Factory(dict)

    def user(self, address: str) -> FakeUser:
        return FakeUser(self.archive.setdefault(address, []))


class FakeDirectory:
    def lookup(self, address: str) -> Deferred[Recipient]:
        assert address == "staff@example.test"
        return defer.succeed(
            Recipient(
                "alias",
                address,
                targets=("carol@example.test", "ANN@remote.test", "team@example.test"),
                forwards=("dan@remote.test",),
            )
        )


@pytest.fixture
def digested(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    kept: list[bytes] = []

    async def add(ctx: ListContext, lst: ListSettings, message: bytes) -> None:
        kept.append(message)

    monkeypatch.setattr(digest, "add", add)
    return kept


@pytest.fixture
def ctx(tmp_path: Path, digested: list[bytes]) -> ListContext:
    db = ListDB(tmp_path / "lists.sqlite")
    db.create(TEAM, 0.0)
    db.subscribe(
        TEAM.address,
        [
            Member("ann@remote.test"),
            Member("bob@remote.test"),
            Member("dig@remote.test", delivery=Delivery.DIGEST),
            Member("off@remote.test", delivery=Delivery.NONE, disabled_by="bounces"),
        ],
    )
    return ListContext(
        db,
        tmp_path,
        FakeDirectory(),  # type: ignore[arg-type]
        FakeStore(),  # type: ignore[arg-type]
        FakeQueue(),  # type: ignore[arg-type]
        ListsSettings(batch=2),
        "mail.example.test",
        "https://mail.example.test",
        b"s" * 32,
    )


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    result: T = on_reactor(lambda: Deferred.fromCoroutine(coroutine))
    return result


def post(tmp_path: Path, header: str, body: bytes = b"Hello.\r\n") -> Path:
    path = tmp_path / f"post{len(list(tmp_path.iterdir()))}"
    path.write_bytes("\r\n".join(header.strip().split("\n")).encode() + b"\r\n\r\n" + body)
    return path


def arrive(
    ctx: ListContext, path: Path, sender: str, lst: ListSettings = TEAM, user: str = ""
) -> None:
    arrival = ListArrival(lst.address, sender, user=user, size=path.stat().st_size)
    run(posting.handle(ctx, lst, arrival, path))


def queue(ctx: ListContext) -> FakeQueue:
    assert isinstance(ctx.queue, FakeQueue)
    return ctx.queue


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


@attrs.define
class FakeSealer:
    sealed: int = 0

    def seal(self, content: bytes | os.PathLike[str]) -> Deferred[bytes]:
        assert isinstance(content, bytes)
        self.sealed += 1
        return defer.succeed(b"ARC-Seal: i=1; test\r\n" + content)


def test_member_post_is_distributed(
    ctx: ListContext, tmp_path: Path, digested: list[bytes]
) -> None:
    sealer = FakeSealer()
    ctx.sealer = sealer
    arrive(ctx, post(tmp_path, "From: Bob <bob@remote.test>\nSubject: hi"), "bob@remote.test")
    posts = queue(ctx).posts
    everyone = [r for q in posts for r in q.recipients]
    # Enabled subscribers and the group, once each (ann twice, case aside), without the
    # digest member, the disabled one and the list itself.
    assert sorted(everyone) == [
        "ann@remote.test",
        "bob@remote.test",
        "carol@example.test",
        "dan@remote.test",
    ]
    assert [len(q.recipients) for q in posts] == [2, 2]  # [lists] batch
    assert all(q.sender == "team-bounces@example.test" and q.forwarded for q in posts)
    personal = {r for q in posts for r in q.personal}
    assert personal == {"ann@remote.test", "bob@remote.test"}  # subscribers: one-click links
    sent = parse(posts[0].content)
    assert sent["List-Id"] == "Team <team.example.test>"
    archive = ctx.store.user(TEAM.address).delivered  # type: ignore[attr-defined]
    assert len(archive) == 1 and parse(archive[0])["Subject"] == "hi"
    assert len(digested) == 1
    assert sealer.sealed == 1 and all(q.content.startswith(b"ARC-Seal:") for q in posts)
    assert not archive[0].startswith(b"ARC-Seal:")


@pytest.mark.parametrize(
    ("header", "sender"),
    [
        ("From: bob@remote.test\nList-Id: Team list <TEAM.example.test>", "bob@remote.test"),
        ("From: bob@remote.test\nAuto-Submitted: auto-replied", "bob@remote.test"),
        ("From: bob@remote.test\nX-Loop: other@else.test\nX-Loop: TEAM@example.test", "b@r.test"),
        ("From: MAILER-DAEMON@remote.test\nSubject: Undelivered", ""),
    ],
)
def test_loops_are_dropped(ctx: ListContext, tmp_path: Path, header: str, sender: str) -> None:
    arrive(ctx, post(tmp_path, header), sender)
    assert queue(ctx).queued == []
    assert ctx.db.held() == []


def test_announce_only_and_size(ctx: ListContext, tmp_path: Path) -> None:
    announce = attrs.evolve(TEAM, announce_only=True, digest=False)
    arrive(ctx, post(tmp_path, "From: bob@remote.test\nSubject: news"), "bob@remote.test", announce)
    assert queue(ctx).posts == [] and ctx.db.held() == []
    (notice,) = queue(ctx).notices
    assert notice.recipients == ["bob@remote.test"]
    assert "only its moderators post" in parse(notice.content).get_content()
    news = post(tmp_path, "From: mod@example.test\nSubject: news")
    arrive(ctx, news, "x@y.test", announce, user="mod@example.test")
    assert len(queue(ctx).posts) == 2
    big = post(tmp_path, "From: bob@remote.test\nSubject: big", b"x" * 20_000 + b"\r\n")
    arrive(ctx, big, "bob@remote.test")
    (held,) = ctx.db.held(TEAM.address)
    assert (held.reason, held.sender, held.subject) == ("size", "bob@remote.test", "big")
    assert moderation.held_path(ctx, TEAM, held.id).read_bytes() == big.read_bytes()


def test_moderation_round_trip(ctx: ListContext, tmp_path: Path) -> None:
    subject = "Subject: =?utf-8?q?offer=0D=0ABcc:_all@example.test?="
    arrive(ctx, post(tmp_path, f"From: eve@else.test\n{subject}"), "eve@else.test")
    assert queue(ctx).posts == []
    (held,) = ctx.db.held(TEAM.address)
    assert held.reason == "non-member"
    (notice,) = queue(ctx).notices
    assert notice.recipients == ["mod@example.test"]
    msg = parse(notice.content)
    assert "offer" in str(msg["Subject"]) and "eve@else.test" in msg.get_content()
    assert msg["Bcc"] is None and held.subject == "offer Bcc: all@example.test"
    approve = msg["Reply-To"].addresses[0].addr_spec
    words = [w.rstrip(".") for w in msg.get_content().split() if w.startswith("team-confirm+")]
    assert words[0] == approve
    reject = words[1]
    assert approve != reject

    def token_of(address: str) -> Any:
        detail = address.split("@")[0].split("+", 1)[1]
        return run(_redeem(ctx, detail))

    # A forged decision (not a moderator) counts for nothing; the post stays held.
    forged = token_of(reject)
    assert run(moderation.confirm(ctx, TEAM, forged, "eve@else.test")).startswith("refused")
    assert len(ctx.db.held()) == 1
    token = token_of(approve)
    assert token.action == "approve" and token.data == held.id
    assert run(moderation.confirm(ctx, TEAM, token, "MOD@example.test")) == "approved"
    assert len(queue(ctx).posts) == 2 and ctx.db.held() == []
    assert not moderation.held_path(ctx, TEAM, held.id).exists()
    assert token_of(approve) is None  # used once
    assert not run(moderation.approve(ctx, TEAM, held.id, "console"))


async def _redeem(ctx: ListContext, token: str) -> Any:
    return await tokens.redeem(ctx, token)


def test_reject_tells_only_oversize_posters_and_expiry(ctx: ListContext, tmp_path: Path) -> None:
    arrive(ctx, post(tmp_path, "From: eve@else.test\nSubject: spam"), "eve@else.test")
    big = post(tmp_path, "From: bob@remote.test\nSubject: big", b"y" * 20_000 + b"\r\n")
    arrive(ctx, big, "bob@remote.test")
    spam, oversize = sorted(ctx.db.held(), key=lambda h: h.reason)
    before = len(queue(ctx).notices)
    assert run(moderation.reject(ctx, TEAM, spam.id, "console"))
    assert len(queue(ctx).notices) == before  # no answer to a non-member's post
    assert run(moderation.reject(ctx, TEAM, oversize.id, "console", "too big"))
    told = queue(ctx).notices[-1]
    assert told.recipients == ["bob@remote.test"]
    assert "too big" in parse(told.content).get_content()
    assert not run(moderation.reject(ctx, TEAM, oversize.id, "console"))
    assert not run(moderation.reject(ctx, TEAM, "../../etc", "console"))
    arrive(ctx, post(tmp_path, "From: eve@else.test\nSubject: later"), "eve@else.test")
    assert run(moderation.expire_held(ctx)) == 0
    ctx.clock = lambda: 10.0**10
    assert run(moderation.expire_held(ctx)) == 1
    assert ctx.db.held() == [] and queue(ctx).posts == []


def test_distribution_resumes_without_sending_twice(
    ctx: ListContext, tmp_path: Path, digested: list[bytes]
) -> None:
    message = post(tmp_path, "From: bob@remote.test\nSubject: once").read_bytes()
    queue(ctx).fail_at = 1  # the second batch fails: the spool runs the handler again
    with pytest.raises(OSError):
        run(distribute.distribute(ctx, TEAM, message, "bob@remote.test"))
    assert len(queue(ctx).posts) == 1
    assert run(distribute.distribute(ctx, TEAM, message, "bob@remote.test")) == 4
    assert run(distribute.distribute(ctx, TEAM, message, "bob@remote.test")) == 4
    everyone = [r for q in queue(ctx).posts for r in q.recipients]
    assert sorted(everyone) == sorted(set(everyone)) and len(everyone) == 4
    assert len(ctx.store.user(TEAM.address).delivered) == 1  # type: ignore[attr-defined]
    assert len(digested) == 1


def test_strict_poster_is_sent_as_the_list(ctx: ListContext, tmp_path: Path) -> None:
    ctx.dmarc_policy = lambda domain: defer.succeed("reject" if domain == "remote.test" else None)
    arrive(ctx, post(tmp_path, "From: Bob <bob@remote.test>\nSubject: hi"), "bob@remote.test")
    posts = queue(ctx).posts
    assert posts and not any(q.forwarded for q in posts)  # signed as the list, its author
    sent = parse(posts[0].content)
    assert sent["From"].addresses[0].addr_spec == "team@example.test"
    assert sent["From"].addresses[0].display_name == "Bob via Team"
    assert sent["Reply-To"].addresses[0].addr_spec == "bob@remote.test"


class BrokenSealer:
    """An ARC sealer whose key is bad: every seal fails."""

    def seal(self, content: bytes | os.PathLike[str]) -> Deferred[bytes]:
        return defer.fail(ValueError("bad ARC key"))


def test_a_failing_sealer_sends_the_post_unsealed(ctx: ListContext, tmp_path: Path) -> None:
    ctx.sealer = BrokenSealer()
    message = post(tmp_path, "From: bob@remote.test\nSubject: unsealed").read_bytes()
    assert run(distribute.distribute(ctx, TEAM, message, "bob@remote.test")) == 4
    posts = queue(ctx).posts
    assert len(posts) == 2 and not any(q.content.startswith(b"ARC-Seal:") for q in posts)
    assert parse(posts[0].content)["Subject"] == "unsealed"


def test_hashing_and_rewriting_run_off_the_reactor(
    ctx: ListContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reactor_thread = on_reactor(threading.get_ident)
    seen: dict[str, int] = {}
    sha256, outgoing = hashlib.sha256, rewrite.outgoing

    def hashing(data: bytes) -> Any:
        seen["hash"] = threading.get_ident()
        return sha256(data)

    def rewriting(*args: Any, **kwargs: Any) -> bytes:
        seen["rewrite"] = threading.get_ident()
        return outgoing(*args, **kwargs)

    monkeypatch.setattr(distribute, "hashlib", types.SimpleNamespace(sha256=hashing))
    monkeypatch.setattr(rewrite, "outgoing", rewriting)
    message = post(tmp_path, "From: bob@remote.test\nSubject: big", b"x" * 100_000).read_bytes()
    assert run(distribute.distribute(ctx, TEAM, message, "bob@remote.test")) == 4
    assert set(seen) == {"hash", "rewrite"}
    assert reactor_thread not in seen.values()


def test_a_batch_queued_just_before_a_crash_is_not_queued_again(
    ctx: ListContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import Clock

    from ourmail.config import QueueSettings
    from ourmail.queue.runner import OutboundQueue

    real = OutboundQueue(
        QueueSettings(), tmp_path / "data", "mx.test", None, None, reactor, Clock()
    )  # type: ignore[arg-type]
    real.files.prepare()
    ctx.queue = real
    mark = distribute.Record.mark
    crashed: list[str] = []

    def crash_once(record: distribute.Record, step: str) -> None:
        if step == "batch 1" and not crashed:
            crashed.append(step)  # queued, but the server stops before it is recorded
            raise OSError("power cut")
        mark(record, step)

    monkeypatch.setattr(distribute.Record, "mark", crash_once)
    message = post(tmp_path, "From: bob@remote.test\nSubject: once").read_bytes()
    with pytest.raises(OSError):
        run(distribute.distribute(ctx, TEAM, message, "bob@remote.test"))
    assert run(distribute.distribute(ctx, TEAM, message, "bob@remote.test")) == 4
    queued = [real.files.read(qid) for qid in real.files.ids()]
    everyone = sorted(r.address for e in queued for r in e.recipients)
    assert crashed and len(queued) == 2
    assert everyone == [
        "ann@remote.test",
        "bob@remote.test",
        "carol@example.test",
        "dan@remote.test",
    ]
