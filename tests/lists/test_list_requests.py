"""Joining and leaving a list by mail: double opt-in through a token that works once and
expires, the commands of ``-request@``, automatic mail left unanswered, subscription
bombing stopped by the pending confirmation and the rate limits, one-click unsubscribe,
owners' approval."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from ourmail.interfaces import ListArrival
from ourmail.lists import requests, tokens
from ourmail.lists.listdb import Token
from tests.lists.listreqhelp import LIST, OWNER, SECRET, context, run, token_of

ANNA = "anna@far.test"


def arrive(tmp_path: Path, role: str, sender: str, message: bytes) -> tuple[ListArrival, Path]:
    path = tmp_path / f"{role}.eml"
    path.write_bytes(message)
    return ListArrival(f"team-{role}@example.test", sender, size=len(message)), path


def test_join_confirm_by_reply_and_replay(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path)
    lst = ctx.db.get(LIST)
    assert lst is not None
    mail = b"From: Anna <anna@far.test>\r\nSubject: hi\r\n\r\nplease\r\n"
    run(requests.handle_join(ctx, lst, *arrive(tmp_path, "join", "Anna@FAR.test", mail)))
    [(sender, rcpts, request)] = box.sent
    assert sender == "team-bounces@example.test" and rcpts == [ANNA]
    assert request["Auto-Submitted"] == "auto-generated"
    token = token_of(request)
    assert ctx.db.member(LIST, ANNA) is None  # not before the confirmation

    used = run(tokens.redeem(ctx, token))
    assert used is not None and (used.action, used.address) == ("subscribe", ANNA)
    assert run(requests.confirm(ctx, lst, used, ANNA)) == requests.SUBSCRIBED
    assert ctx.db.member(LIST, ANNA) is not None
    [welcome] = box.to(ANNA)[1:]
    assert requests.unsubscribe_url(ctx, lst, ANNA) in welcome.get_content()
    assert "team-leave@example.test" in welcome.get_content()
    [notice] = box.to(OWNER)
    assert ANNA in str(notice["Subject"])

    assert run(tokens.redeem(ctx, token)) is None  # replayed: works once
    forged = "0123456789abcdef0123456789"
    assert run(tokens.redeem(ctx, forged)) is None
    assert run(tokens.peek(ctx, "../../etc/passwd")) is None


def test_expired_token(tmp_path: Path) -> None:
    ctx, box, clock = context(tmp_path, confirm_hours=1)
    lst = ctx.db.get(LIST)
    assert lst is not None
    assert run(requests.request(ctx, lst, ANNA, "subscribe", "", "mail")) == requests.SENT
    token = token_of(box.sent[0][2])
    clock.now += 3601
    assert run(tokens.peek(ctx, token)) is None
    assert run(tokens.redeem(ctx, token)) is None
    assert ctx.db.member(LIST, ANNA) is None
    # Once it expired, a new request sends a new confirmation.
    assert run(requests.request(ctx, lst, ANNA, "subscribe", "", "mail")) == requests.SENT
    assert len(box.sent) == 2
    # One that could not be queued does not stand as pending: the next request sends.
    box.failing = True
    with pytest.raises(OSError):
        run(requests.request(ctx, lst, "bob@far.test", "subscribe", "", "mail"))
    box.failing = False
    assert run(requests.request(ctx, lst, "bob@far.test", "subscribe", "", "mail")) == "sent"
    assert len(box.to("bob@far.test")) == 1


def test_request_commands(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path)
    lst = ctx.db.get(LIST)
    assert lst is not None
    # Commands until the first line that is not one; From: other than the sender is ignored.
    mail = (
        b"From: victim@else.test\r\nSubject: Re: help\r\nMessage-ID: <m1@far.test>\r\n"
        b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\n\r\nJOIN me please\r\nhelp\r\nthanks!\r\n"
        b"unsubscribe\r\n--b--\r\n"
    )
    run(requests.handle_request(ctx, lst, *arrive(tmp_path, "request", ANNA, mail)))
    subjects = sorted(str(m["Subject"]) for m in box.to(ANNA))
    assert subjects == [
        "Confirm your subscription to team@example.test",
        "Help for team@example.test",
    ]
    assert not box.to("victim@else.test")
    helped = next(m for m in box.to(ANNA) if "Help" in str(m["Subject"]))
    assert helped["In-Reply-To"] == "<m1@far.test>"
    assert "team-join@example.test" in helped.get_content()

    # No command at all: the help text, once; Greek for a Greek list.
    ctx.db.update(attrs.evolve(lst, language="el"))
    greek = ctx.db.get(LIST)
    assert greek is not None
    box.sent.clear()
    mail = b"Subject: what is this\r\n\r\n" + b"x" * 200_000 + b"\r\n"
    run(requests.handle_request(ctx, greek, *arrive(tmp_path, "request", "bob@far.test", mail)))
    [(_, _, helped)] = box.sent
    assert str(helped["Subject"]).split()[0] == "Βοήθεια"


def test_automatic_mail_is_not_answered(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path)
    lst = ctx.db.get(LIST)
    assert lst is not None
    auto = b"Auto-Submitted: auto-replied\r\nSubject: subscribe\r\n\r\nsubscribe\r\n"
    bulk = b"Precedence: bulk\r\nSubject: subscribe\r\n\r\n"
    for role, sender, mail in [
        ("join", "", b"Subject: x\r\n\r\n"),  # a bounce
        ("join", ANNA, auto),
        ("request", ANNA, auto),
        ("leave", ANNA, bulk),
        ("request", "", b"Subject: subscribe\r\n\r\n"),
    ]:
        handler = {"join": requests.handle_join, "leave": requests.handle_leave}.get(
            role, requests.handle_request
        )
        run(handler(ctx, lst, *arrive(tmp_path, role, sender, mail)))
    assert box.sent == []


def test_subscription_bombing(tmp_path: Path) -> None:
    ctx, box, clock = context(tmp_path, requests_per_address=5, requests_per_client=8)
    lst = ctx.db.get(LIST)
    assert lst is not None
    # One address, many requests: one confirmation while it is pending, then limited.
    results = [
        run(requests.request(ctx, lst, ANNA, "subscribe", f"192.0.2.{i}", "web")) for i in range(9)
    ]
    assert results == [requests.SENT] * 5 + [requests.LIMITED] * 4
    assert len(box.to(ANNA)) == 1
    # Many addresses from one client: limited after requests_per_client.
    clock.now += 3601
    box.sent.clear()
    results = [
        run(requests.request(ctx, lst, f"p{i}@far.test", "subscribe", "198.51.100.7", "web"))
        for i in range(12)
    ]
    assert results == [requests.SENT] * 8 + [requests.LIMITED] * 4
    assert len(box.sent) == 8
    # A member asking again hears nothing (the web answers it as any other request).
    ctx.db.subscribe(LIST, [requests.Member("m@far.test")])
    box.sent.clear()
    assert run(requests.request(ctx, lst, "m@far.test", "subscribe", "", "web")) == "already"
    assert run(requests.request(ctx, lst, "x@far.test", "unsubscribe", "", "web")) == "already"
    assert box.sent == []


def test_leave_and_one_click(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path)
    lst = ctx.db.get(LIST)
    assert lst is not None
    ctx.db.subscribe(LIST, [requests.Member(ANNA), requests.Member("bob@far.test")])
    run(requests.handle_leave(ctx, lst, *arrive(tmp_path, "leave", ANNA, b"Subject: bye\r\n\r\n")))
    used = run(tokens.redeem(ctx, token_of(box.to(ANNA)[0])))
    assert run(requests.confirm(ctx, lst, used, "")) == requests.UNSUBSCRIBED
    assert ctx.db.member(LIST, ANNA) is None
    assert "no longer subscribed" in box.to(ANNA)[1].get_content()

    signature = tokens.member_signature(SECRET, LIST, "bob@far.test")
    assert not run(requests.one_click(ctx, lst, "bob@far.test", "0" * 32))
    assert not run(requests.one_click(ctx, lst, "bob@far.test", signature[:-1] + "x"))
    assert not run(requests.one_click(ctx, lst, ANNA, signature))  # bob's, not anna's
    assert not run(requests.one_click(ctx, lst, "bob@far.test", "é" * 32))
    assert ctx.db.member(LIST, "bob@far.test") is not None
    box.sent.clear()
    assert run(requests.one_click(ctx, lst, "Bob@far.test", signature))
    assert ctx.db.member(LIST, "bob@far.test") is None
    assert [rcpts for _, rcpts, _ in box.sent] == [[OWNER]]  # told; no mail to bob


def test_owners_approve_subscriptions(tmp_path: Path) -> None:
    ctx, box, clock = context(tmp_path)
    lst = attrs.evolve(ctx.db.get(LIST), approve_subscriptions=True)
    ctx.db.update(lst)
    asked = Token(LIST, ANNA, "subscribe", "", clock(), clock() + 60)
    assert run(requests.confirm(ctx, lst, asked, ANNA)) == requests.AWAITING_APPROVAL
    assert ctx.db.member(LIST, ANNA) is None
    # Confirmed again (a crash before the token was used up): the owners are not asked twice.
    assert run(requests.confirm(ctx, lst, asked, ANNA)) == requests.AWAITING_APPROVAL
    [ask] = box.to(OWNER)
    approval = run(tokens.redeem(ctx, token_of(ask)))
    assert approval.data == requests.APPROVED
    assert run(requests.confirm(ctx, lst, approval, OWNER)) == requests.SUBSCRIBED
    assert ctx.db.member(LIST, ANNA) is not None
    assert run(requests.confirm(ctx, lst, approval, OWNER)) == requests.ALREADY_MEMBER


def test_hostile_command_mail(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path)
    lst = ctx.db.get(LIST)
    assert lst is not None
    # 2,000 nested multiparts (Python's email parser would recurse too deep), then a command.
    nested = b"".join(
        b"--a%d\r\nContent-Type: multipart/mixed; boundary=a%d\r\n\r\n" % (i, i + 1)
        for i in range(2000)
    )
    deep = (
        b"Subject: x\r\nContent-Type: multipart/mixed; boundary=a0\r\n\r\n"
        + nested
        + b"--a2000\r\nContent-Type: text/plain\r\n\r\nsubscribe\r\n"
    )
    run(requests.handle_request(ctx, lst, *arrive(tmp_path, "request", ANNA, deep)))
    assert [str(m["Subject"]) for m in box.to(ANNA)] == ["Help for team@example.test"]
    # A base64 body in an unknown charset, and a broken Subject: still read.
    encoded = (
        b"Subject: =?x-nonsense?q?=ZZ?=\r\nContent-Type: text/plain; charset=x-unknown\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nc3Vic2NyaWJlCg==\r\n"
    )
    run(requests.handle_request(ctx, lst, *arrive(tmp_path, "request", "bob@far.test", encoded)))
    [(_, _, asked)] = [s for s in box.sent if s[1] == ["bob@far.test"]]
    assert "Confirm your subscription" in str(asked["Subject"])
