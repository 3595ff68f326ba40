"""A member chooses each post or the daily digest, by mail (``digest``, ``set digest``,
``nodigest``, ``each`` to ``-request@``) and on the list's page, always confirmed: the
token's confirmer writes only the delivery (and a bounce-disabled member's bounce columns),
is idempotent, and a digest member then gets the digest and not each post."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import attrs
from conftest import running_server
from webhelp import Browser

from ourmail.interfaces import ListArrival
from ourmail.lists import digest, distribute, requests, roles, service, tokens
from ourmail.lists.context import ListContext
from ourmail.lists.model import Delivery, ListSettings, Member
from tests.lists import test_list_bounces as digests
from tests.lists.listreqhelp import LIST, OWNER, context, run, token_of

ANNA = "anna@far.test"


def digest_list(ctx: ListContext, **changes: object) -> ListSettings:
    """The test list with ``digest`` on (and ``changes``), stored."""
    found = ctx.db.get(LIST)
    assert found is not None
    lst = attrs.evolve(found, digest=True, **changes)
    ctx.db.update(lst)
    return lst


def ask(ctx: ListContext, lst: ListSettings, tmp_path: Path, sender: str, mail: bytes) -> None:
    path = tmp_path / "request.eml"
    path.write_bytes(mail)
    arrival = ListArrival("team-request@example.test", sender, size=len(mail))
    run(requests.handle_request(ctx, lst, arrival, path))


def reply(ctx: ListContext, lst: ListSettings, tmp_path: Path, token: str, sender: str) -> None:
    """A reply to a confirmation request, through the service's confirmers."""
    path = tmp_path / "reply.eml"
    path.write_bytes(f"From: {sender}\r\nSubject: Re: confirm\r\n\r\nyes\r\n".encode())
    arrival = ListArrival(f"team-confirm+{token}@example.test", sender)
    confirmers = service.default_confirmers()
    run(roles.confirm(ctx, lst, arrival, token, confirmers, lambda a: False, path))


def delivery(ctx: ListContext, address: str = ANNA) -> Delivery:
    member = ctx.db.member(LIST, address)
    assert member is not None
    return member.delivery


def test_commands_are_read() -> None:
    assert requests._command("set digest") == "digest"
    assert requests._command("SET NoDigest please") == "each"
    assert requests._command("nodigest") == requests._command("each") == "each"
    assert requests._command("digest") == "digest"
    assert requests._command("set") is None and requests._command("set mail") is None


def test_digest_by_mail_confirmed_by_reply_then_each_again(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path)
    lst = digest_list(ctx)
    ctx.db.subscribe(LIST, [Member(ANNA, name="Anna")])
    ask(ctx, lst, tmp_path, ANNA, b"From: victim@else.test\r\nSubject: set digest\r\n\r\n")
    [confirmation] = box.to(ANNA)
    assert "daily digest" in confirmation.get_content()
    assert not box.to("victim@else.test")
    token = token_of(confirmation)
    assert delivery(ctx) is Delivery.EACH  # not before the confirmation

    # A forged or unknown token does nothing.
    reply(ctx, lst, tmp_path, "0123456789abcdef0123456789", ANNA)
    assert delivery(ctx) is Delivery.EACH
    reply(ctx, lst, tmp_path, token, ANNA)
    assert delivery(ctx) is Delivery.DIGEST
    assert ctx.db.member(LIST, ANNA) == Member(ANNA, name="Anna", delivery=Delivery.DIGEST)
    assert "now gets the daily digest" in str(box.to(ANNA)[-1]["Subject"])
    assert run(tokens.peek(ctx, token)) is None  # used up

    # The confirmer run again (a crash before the token was used up) does no harm.
    pending = run(tokens.issue(ctx, LIST, ANNA, "digest"))
    found = run(tokens.peek(ctx, pending))
    assert run(requests.confirm(ctx, lst, found, ANNA)) == requests.ALREADY
    assert delivery(ctx) is Delivery.DIGEST

    box.sent.clear()
    ask(ctx, lst, tmp_path, ANNA, b"Subject: nodigest\r\n\r\n")
    reply(ctx, lst, tmp_path, token_of(box.to(ANNA)[0]), ANNA)
    assert delivery(ctx) is Delivery.EACH


def test_what_cannot_be_chosen_gets_a_short_answer_by_mail(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path, requests_per_address=3)
    found = ctx.db.get(LIST)
    assert found is not None
    off = Member("off@far.test", delivery=Delivery.NONE, disabled_by="owner")
    ctx.db.subscribe(LIST, [Member(ANNA), off])
    # No digest on the list.
    ask(ctx, found, tmp_path, ANNA, b"Subject: digest\r\n\r\n")
    [answer] = box.to(ANNA)
    assert "has no digest" in answer.get_content() and answer["Reply-To"] is None
    lst = digest_list(ctx)
    # Not a member; disabled by an owner; the delivery it has already.
    ask(ctx, lst, tmp_path, "zed@far.test", b"Subject: digest\r\n\r\n")
    assert "not subscribed" in box.to("zed@far.test")[0].get_content()
    ask(ctx, lst, tmp_path, "off@far.test", b"Subject: each\r\n\r\n")
    assert "team-owner@example.test" in box.to("off@far.test")[0].get_content()
    ask(ctx, lst, tmp_path, ANNA, b"Subject: each\r\n\r\n")
    assert "already" in box.to(ANNA)[1].get_content()
    assert all(m["Reply-To"] is None for _, _, m in box.sent)  # nothing to confirm
    # Rate-limited as the other answers are: the fourth request of the hour gets nothing.
    ask(ctx, lst, tmp_path, ANNA, b"Subject: each\r\n\r\n")
    ask(ctx, lst, tmp_path, ANNA, b"Subject: each\r\n\r\n")
    assert len(box.to(ANNA)) == 3
    # An owner's choice stands against a confirmed request made before it.
    token = run(tokens.issue(ctx, LIST, "off@far.test", "each"))
    assert run(requests.confirm(ctx, lst, run(tokens.peek(ctx, token)), "")) == requests.DISABLED
    assert delivery(ctx, "off@far.test") is Delivery.NONE


def test_a_bounce_disabled_member_is_reenabled_with_its_choice(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path)
    lst = digest_list(ctx)
    disabled = Member(ANNA, "Anna", Delivery.NONE, "bounces", 5.0, 1_700_000_000.0, 1.0)
    ctx.db.subscribe(LIST, [disabled])
    ask(ctx, lst, tmp_path, ANNA, b"Subject: set digest\r\n\r\n")
    token = token_of(box.to(ANNA)[0])
    # A name changed meanwhile stands: only the delivery and bounce columns are written.
    ctx.db.set_member(LIST, attrs.evolve(disabled, name="Anna K."))
    used = run(tokens.use(ctx, token, lambda t: requests.confirm(ctx, lst, t, ANNA)))
    assert used is not None and used[1] == requests.REENABLED
    assert ctx.db.member(LIST, ANNA) == Member(ANNA, "Anna K.", Delivery.DIGEST, "", 0.0, 0.0, 1.0)


def test_subscribing_with_the_digest(tmp_path: Path) -> None:
    ctx, box, clock = context(tmp_path)
    lst = digest_list(ctx)
    sent = run(requests.request(ctx, lst, ANNA, "subscribe", "", "web", requests.DIGEST_CHOICE))
    assert sent == requests.SENT
    [confirmation] = box.to(ANNA)
    assert "daily digest" in confirmation.get_content()
    found = run(tokens.redeem(ctx, token_of(confirmation)))
    assert run(requests.confirm(ctx, lst, found, "")) == requests.SUBSCRIBED
    assert delivery(ctx) is Delivery.DIGEST

    # With the owners' approval, the choice goes with the owners' token.
    approving = digest_list(ctx, approve_subscriptions=True)
    bob = attrs.evolve(found, address="bob@far.test")
    assert run(requests.confirm(ctx, approving, bob, "")) == requests.AWAITING_APPROVAL
    approval = run(tokens.redeem(ctx, token_of(box.to(OWNER)[-1])))
    assert requests.approved(approval.data) and requests.wants_digest(approval.data)
    assert run(requests.confirm(ctx, approving, approval, OWNER)) == requests.SUBSCRIBED
    assert delivery(ctx, "bob@far.test") is Delivery.DIGEST


def test_the_help_lists_the_commands_in_both_languages(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path)
    for language in ("en", "el"):
        lst = digest_list(ctx, language=language)
        run(requests.send_help(ctx, lst, ANNA))
        text = box.sent[-1][2].get_content()
        assert "nodigest" in text and "digest" in text
    assert box.sent[0][2].get_content() != box.sent[1][2].get_content()


def test_by_web_form_and_confirmation_page(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path, threads=True)
    lst = digest_list(ctx)
    ctx.db.subscribe(LIST, [Member(ANNA)])
    with running_server(tmp_path / "server") as srv:
        assert srv.server.web is not None
        srv.server.web.services.lists = SimpleNamespace(ctx=ctx)  # type: ignore[assignment]
        browser = Browser(srv)
        page = browser.get(f"/lists/{LIST}")
        assert 'value="digest"' in page.text and 'name="digest"' in page.text
        form = {"address": ANNA, "action": "digest", "csrf": page.csrf()}
        asked = browser.post(f"/lists/{LIST}", form)
        stranger = browser.post(f"/lists/{LIST}", form | {"address": "zed@far.test"})
        assert asked.status == stranger.status == 200 and asked.body == stranger.body
        assert [rcpts for _, rcpts, _ in box.sent] == [[ANNA]]  # nothing to a non-member
        token = token_of(box.sent[0][2])
        shown = browser.get(f"/lists/confirm/{token}")
        assert shown.status == 200 and "daily digest" in shown.text
        assert delivery(ctx) is Delivery.EACH  # GET never acts
        done = browser.post(f"/lists/confirm/{token}", {"csrf": shown.csrf()})
        assert done.status == 200 and "gets the daily digest" in done.text
        assert delivery(ctx) is Delivery.DIGEST

        # Subscribing with the digest at once.
        form = {"address": "bob@far.test", "action": "subscribe", "digest": "yes"}
        browser.post(f"/lists/{LIST}", form | {"csrf": page.csrf()})
        token = token_of(box.to("bob@far.test")[0])
        shown = browser.get(f"/lists/confirm/{token}")
        assert "with the daily digest" in shown.text
        browser.post(f"/lists/confirm/{token}", {"csrf": shown.csrf()})
        assert delivery(ctx, "bob@far.test") is Delivery.DIGEST

        # A list without a digest offers no choice and refuses one.
        ctx.db.update(attrs.evolve(lst, digest=False))
        page = browser.get(f"/lists/{LIST}")
        assert 'value="digest"' not in page.text
        form = {"address": ANNA, "action": "digest", "csrf": page.csrf()}
        assert browser.post(f"/lists/{LIST}", form).status == 400


def test_a_digest_member_gets_the_digest_and_not_each_post(tmp_path: Path) -> None:
    lst = attrs.evolve(digests.LIST, digest=True)
    ctx = digests.make_ctx(tmp_path, [Member("d1@remote.test"), Member("each@remote.test")], lst)
    queue: digests.FakeQueue = ctx.queue  # type: ignore[assignment]

    async def choose() -> object:
        token = await tokens.issue(ctx, lst.address, "d1@remote.test", "digest")
        return await tokens.use(ctx, token, lambda t: requests.confirm(ctx, lst, t, ""))

    assert digests.run(choose) is not None
    each = digests.run(lambda: distribute.recipients(ctx, lst))
    assert each.all == ("each@remote.test",)
    queue.sent.clear()
    digests.run(lambda: digest.add(ctx, lst, digests.POSTS[0]))
    ctx.clock.now += digests.DAY  # type: ignore[attr-defined]
    assert digests.run(lambda: digest.send_due(ctx)) == 1
    assert [q.recipients for q in queue.sent] == [["d1@remote.test"]]
