"""Who the lists trust (ourmail/lists/identity.py): a moderator's rights only for a logged-in
user or a From: that passed this server's DMARC check; posts and confirmations from
robots, hostile From: fields, caps on held posts, the notices to unknown senders."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.python import threadable

from ourmail import service
from ourmail.config import ListsSettings, load_settings
from ourmail.filters import dmarcpolicy
from ourmail.interfaces import Actor, ListArrival
from ourmail.lists import (
    compose,
    digest,
    headers,
    identity,
    moderation,
    posting,
    requests,
    rewrite,
    roles,
    tokens,
)
from ourmail.lists.context import ListContext
from ourmail.lists.headers import parse_fields
from ourmail.lists.listdb import ListDB, Token
from ourmail.lists.model import ListSettings, Member, PostPolicy
from tests.lists.listreqhelp import SyncContext
from tests.lists.test_list_posting_flow import (
    TEAM,
    FakeDirectory,
    FakeQueue,
    FakeStore,
    parse,
    post,
    queue,
    run,
)

OURS = "mail.example.test"


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ListContext:
    async def add(ctx: ListContext, lst: ListSettings, message: bytes) -> None:
        return None

    monkeypatch.setattr(digest, "add", add)
    db = ListDB(tmp_path / "lists.sqlite")
    db.create(TEAM, 0.0)
    db.subscribe(TEAM.address, [Member("bob@remote.test")])
    return ListContext(
        db,
        tmp_path,
        FakeDirectory(),  # type: ignore[arg-type]
        FakeStore(),  # type: ignore[arg-type]
        FakeQueue(),  # type: ignore[arg-type]
        ListsSettings(batch=100),
        OURS,
        "https://mail.example.test",
        b"s" * 32,
        authserv_id=OURS,
    )


def arrive(ctx: ListContext, path: Path, sender: str, lst: ListSettings, user: str = "") -> None:
    arrival = ListArrival(lst.address, sender, user=user, size=path.stat().st_size)
    run(posting.handle(ctx, lst, arrival, path))


def passed(domain: str, authserv_id: str = OURS) -> str:
    return (
        f"Authentication-Results: {authserv_id} (our check);\n spf=pass smtp.mailfrom={domain};"
        f" dmarc=pass (p=reject) header.from={domain}"
    )


MODERATED = attrs.evolve(TEAM, post_policy=PostPolicy.MODERATORS, digest=False)


def test_a_forged_moderator_post_is_held(ctx: ListContext, tmp_path: Path) -> None:
    # A bare From: and envelope sender of the moderator: anyone can write them.
    arrive(ctx, post(tmp_path, "From: mod@example.test\nSubject: a"), "mod@example.test", MODERATED)
    assert queue(ctx).posts == [] and len(ctx.db.held()) == 1
    # A DMARC pass of another server's (or of another domain) gives nothing either.
    header = f"{passed('example.test', 'evil.test')}\n{passed('else.test')}\nFrom: mod@example.test"
    arrive(ctx, post(tmp_path, header + "\nSubject: b"), "mod@example.test", MODERATED)
    assert queue(ctx).posts == [] and len(ctx.db.held()) == 2


def test_a_verified_moderator_posts(ctx: ListContext, tmp_path: Path) -> None:
    header = f"{passed('example.test')}\nFrom: Mod <mod@example.test>\nSubject: ok"
    arrive(ctx, post(tmp_path, header), "x@elsewhere.test", MODERATED)
    assert len(queue(ctx).posts) == 1
    arrive(ctx, post(tmp_path, "From: other@x.test\nSubject: sub"), "o@x.test", MODERATED,
           user="owner@example.test")  # fmt: skip
    assert len(queue(ctx).posts) == 2 and ctx.db.held() == []
    announce = attrs.evolve(TEAM, announce_only=True, digest=False)
    arrive(ctx, post(tmp_path, "From: mod@example.test\nSubject: n"), "mod@example.test", announce)
    assert len(queue(ctx).posts) == 2  # refused: not verified
    assert "only its moderators post" in parse(queue(ctx).notices[-1].content).get_content()


def test_verified_addresses() -> None:
    arrival = ListArrival("team@example.test", "a@b.test")
    two = parse_fields(f"{passed('b.test')}\r\nFrom: a@b.test\r\nFrom: c@b.test\r\n".encode())
    assert identity.verified(arrival, two, OURS) == []  # RFC 5322 §3.6: one From: only
    one = parse_fields(f"{passed('B.test')}\r\nFrom: A@b.test\r\n".encode())
    assert identity.verified(arrival, one, OURS) == ["a@b.test"]
    assert identity.verified(arrival, one, "") == []
    assert identity.by_mail(arrival, []) == "a@b.test (unverified)"
    assert identity.by_mail(ListArrival("t@x", ""), []) != ""


def _held_and_tokens(ctx: ListContext, tmp_path: Path, subject: str) -> tuple[str, str]:
    arrive(ctx, post(tmp_path, f"From: eve@else.test\nSubject: {subject}"), "eve@else.test", TEAM)
    text = parse(queue(ctx).notices[-1].content).get_content()
    found = [w.split("+", 1)[1].split("@")[0] for w in text.split() if "team-confirm+" in w]
    return found[0], found[1]


def _reply(ctx: ListContext, tmp_path: Path, token: str, sender: str, header: str) -> None:
    path = post(tmp_path, header)
    confirmers = {
        "approve": moderation.confirm,
        "reject": moderation.confirm,
        "subscribe": requests.confirm,
    }
    arrival = ListArrival(f"team-confirm+{token}@example.test", sender)
    run(roles.confirm(ctx, TEAM, arrival, token, confirmers, lambda a: False, path))


def test_approval_by_reply_needs_a_verified_moderator(ctx: ListContext, tmp_path: Path) -> None:
    approve, _ = _held_and_tokens(ctx, tmp_path, "one")
    # Forged: envelope sender and From: of the moderator, no DMARC pass of ours.
    _reply(ctx, tmp_path, approve, "mod@example.test", "From: mod@example.test\nSubject: Re")
    assert queue(ctx).posts == [] and len(ctx.db.held()) == 1
    assert run(_peek(ctx, approve)) is not None  # not used up by the forgery
    header = f"{passed('example.test')}\nFrom: mod@example.test\nSubject: Re"
    _reply(ctx, tmp_path, approve, "mod@example.test", header)
    assert len(queue(ctx).posts) == 1 and ctx.db.held() == []
    assert run(_peek(ctx, approve)) is None


@pytest.mark.parametrize(
    ("sender", "header"),
    [
        ("", "From: MAILER-DAEMON@example.test"),
        ("bob@remote.test", "From: bob@remote.test\nAuto-Submitted: auto-replied"),
        ("bob@remote.test", "From: bob@remote.test\nPrecedence: bulk"),
    ],
)
def test_robots_confirm_nothing(ctx: ListContext, tmp_path: Path, sender: str, header: str) -> None:
    token = run(_issue(ctx))
    _reply(ctx, tmp_path, token, sender, header)
    assert ctx.db.member(TEAM.address, "new@remote.test") is None
    assert run(_peek(ctx, token)) is not None  # not used up
    assert queue(ctx).queued == []


async def _issue(ctx: ListContext) -> str:
    return await tokens.issue(ctx, TEAM.address, "new@remote.test", "subscribe")


async def _peek(ctx: ListContext, token: str) -> Token | None:
    return await tokens.peek(ctx, token)


@pytest.mark.parametrize(
    "value",
    [
        "(" * 5000 + "a@b.test",
        "a@b.test " + "(" * 100_000,
        "g:" * 50_000 + "a@b.test;",
        "(a" * 30_000,
        ", ".join(["x@y.test"] * 5000),
        "<" * 100_000,
    ],
)
def test_hostile_address_fields_name_no_one(value: str) -> None:
    assert headers.addresses(value) == []


def test_a_hostile_from_is_held_not_guessed(ctx: ListContext, tmp_path: Path) -> None:
    nested = "(" * 5000 + "bob@remote.test" + ")" * 5000
    arrive(ctx, post(tmp_path, f"From: {nested}\nSubject: deep"), "eve@else.test", TEAM)
    assert queue(ctx).posts == [] and len(ctx.db.held()) == 1


def test_parsing_and_rewriting_run_in_threads(tmp_path: Path) -> None:
    ran: list[str] = []

    class Recording(SyncContext):
        def run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
            ran.append(f.func.__name__ if isinstance(f, functools.partial) else f.__name__)
            return super().run(f, *args)

    ctx = Recording(None, None, None, None, None, None, "h", "https://h", b"s" * 32)  # type: ignore[arg-type]
    message = b"From: Ann <ann@a.test>\r\nSubject: s\r\n\r\nHi.\r\n"
    out = run(rewrite.rewrite(ctx, TEAM, message))
    assert b"List-Id:" in out.content
    assert ran == ["author_domains", "outgoing"]


def test_no_preview_of_a_part_flood() -> None:
    flood = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 1000
    assert moderation._preview(flood) == ""
    assert moderation._preview(b"Subject: s\r\n\r\nHello.\r\n") == "Hello."


@pytest.mark.parametrize(
    ("record", "domain", "policy"),
    [
        ("v=DMARC1; p=reject; sp=none", "strict.test", "reject"),
        ("v=DMARC1; p=reject; sp=none", "news.strict.test", "none"),  # RFC 7489 §6.3 sp=
        ("v=DMARC1; p=none; sp=quarantine", "a.b.strict.test", "quarantine"),
        ("v=DMARC1; p=reject", "news.strict.test", "reject"),  # no sp=: p=
    ],
)
def test_a_subdomain_takes_the_organisational_sp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str, domain: str, policy: str
) -> None:
    async def discover(resolver: Any, reactor: Any, name: str, timeout: float) -> Any:
        return dmarcpolicy.parse_record(record, "strict.test")

    monkeypatch.setattr(service.dmarcpolicy, "discover", discover)
    settings = load_settings(data=str(tmp_path), domains=("example.test",), hostname="mx.test")
    lists = service.mailing_lists(settings, None, None, None, None, None)  # type: ignore[arg-type]
    try:
        assert run(_policy(lists.ctx, domain)) == policy
    finally:
        lists.ctx.db.close()


async def _policy(ctx: ListContext, domain: str) -> str | None:
    assert ctx.dmarc_policy is not None
    return await ctx.dmarc_policy(domain)


def test_the_authors_dmarc_lookups_run_at_once() -> None:
    asked: dict[str, Deferred[str | None]] = {}

    def lookup(domain: str) -> Deferred[str | None]:
        asked[domain] = Deferred()
        return asked[domain]

    ctx = SyncContext(None, None, None, None, None, None, "h", "https://h", b"s" * 32)  # type: ignore[arg-type]
    ctx.dmarc_policy = lookup
    found: list[bool] = []
    Deferred.fromCoroutine(rewrite.strict_dmarc(ctx, ["a.test", "B.test", "b.test"])).addCallback(
        found.append
    )
    assert sorted(asked) == ["a.test", "b.test"]  # both asked before either answered
    asked["b.test"].callback("reject")
    asked["a.test"].callback(None)
    assert found == [True]


@pytest.mark.parametrize(
    "header",
    [
        "From: bob@remote.test\nFrom: mod@example.test\nSubject: two",
        "Sender: bob@remote.test\nSubject: none",
        "From: undisclosed-recipients:;\nSubject: empty",
    ],
)
def test_not_one_from_is_held(ctx: ListContext, tmp_path: Path, header: str) -> None:
    arrive(ctx, post(tmp_path, header), "bob@remote.test", TEAM)
    assert queue(ctx).posts == []
    (held,) = ctx.db.held()
    assert held.reason == moderation.BAD_FROM
    text = parse(queue(ctx).notices[-1].content).get_content()
    assert "exactly one From: field" in text


def test_held_posts_are_capped(ctx: ListContext, tmp_path: Path) -> None:
    ctx.settings = ListsSettings(held_max=2)
    for n in range(4):
        arrive(ctx, post(tmp_path, f"From: eve@else.test\nSubject: {n}"), "eve@else.test", TEAM)
    assert sorted(h.subject for h in ctx.db.held()) == ["0", "1"]
    assert len(queue(ctx).notices) == 2
    assert sorted(p.name for p in (tmp_path / "held" / TEAM.address).iterdir()) == sorted(
        h.id for h in ctx.db.held()
    )


def test_notices_to_unknown_senders_are_limited(ctx: ListContext, tmp_path: Path) -> None:
    announce = attrs.evolve(TEAM, announce_only=True, digest=False)
    for n in range(8):
        path = post(tmp_path, f"From: victim@else.test\nSubject: {n}")
        arrive(ctx, path, "victim@else.test", announce)
    told = [q for q in queue(ctx).notices if q.recipients == ["victim@else.test"]]
    assert len(told) == ctx.settings.requests_per_address == 5


def test_a_notice_to_a_non_ascii_address_is_rfc_6532() -> None:
    sent: list[tuple[bytes, bool]] = []

    class Queue:
        def enqueue(self, sender: str, rcpts: Any, content: bytes, params: Any, utf8: bool) -> Any:
            sent.append((content, utf8))
            return Deferred()

    to = "δοκιμή@example.test"
    data = compose.message(TEAM, [to], "Καλώς ήρθατε", "Γεια.", "h.test")
    head = data.split(b"\r\n\r\n")[0]
    assert f"To: {to}\r\n".encode() in head and b"=?" not in head.split(b"\r\nTo:")[1]
    ctx = SyncContext(None, None, None, None, Queue(), None, "h", "https://h", b"s" * 32)  # type: ignore[arg-type]
    ctx.send(TEAM, [to], data)
    assert sent == [(data, True)]  # SMTPUTF8 (RFC 6531)
    ascii_only = compose.message(TEAM, ["bob@remote.test"], "Καλώς ήρθατε", "Γεια.", "h.test")
    assert ascii_only.split(b"\r\n\r\n")[0].isascii()  # RFC 2047 encoded words


def test_the_held_notice_links_to_the_confirmation_page(ctx: ListContext, tmp_path: Path) -> None:
    approve, reject = _held_and_tokens(ctx, tmp_path, "links")
    text = parse(queue(ctx).notices[-1].content).get_content()
    assert f"https://mail.example.test/lists/confirm/{approve}" in text
    assert f"https://mail.example.test/lists/confirm/{reject}" in text
    assert run(_peek(ctx, approve)) is not None  # the page's GET only peeks


@attrs.define
class Audit:
    lines: list[tuple[str, str, str, str, str]] = attrs.Factory(list)

    def ready(self) -> None:
        return None

    def record(self, actor: Actor, action: str, target: str, result: str, detail: str = "") -> None:
        self.lines.append((actor.who, actor.via, action, target, result))


def test_decisions_by_mail_and_link_are_audited(ctx: ListContext, tmp_path: Path) -> None:
    audit = Audit()
    ctx.audit = audit
    approve, _ = _held_and_tokens(ctx, tmp_path, "one")
    _reply(ctx, tmp_path, approve, "mod@example.test", "From: mod@example.test\nSubject: Re")
    (first,) = ctx.db.held()
    _, reject = _held_and_tokens(ctx, tmp_path, "two")
    token = run(_redeem(ctx, reject))
    assert run(moderation.confirm(ctx, TEAM, token, "")) == "rejected"  # the web page
    assert audit.lines == [
        (
            "mod@example.test (unverified)",
            "mail",
            "list.held-approve",
            f"team@example.test {first.id}",
            "refused: not a moderator",
        ),
        ("confirmation link", "web", "list.held-reject", f"team@example.test {token.data}", "ok"),
    ]


async def _redeem(ctx: ListContext, token: str) -> Token | None:
    return await tokens.redeem(ctx, token)


def test_a_posts_header_is_parsed_off_the_reactor(
    ctx: ListContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_reactor: list[bool] = []
    read_post = posting.read_post

    def recording(*args: Any) -> posting.Post:
        on_reactor.append(threadable.isInIOThread())
        return read_post(*args)

    monkeypatch.setattr(posting, "read_post", recording)
    arrive(ctx, post(tmp_path, "From: bob@remote.test\nSubject: hi"), "bob@remote.test", TEAM)
    assert len(queue(ctx).posts) == 1
    assert on_reactor == [False]
