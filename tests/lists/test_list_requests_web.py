"""The lists' public pages over HTTPS against a running server: the list's page shows no
member, answers members and others alike and limits each client; the confirmation page acts
on POST only, once; RFC 8058 one-click unsubscribe works without cookies or login."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from conftest import running_server
from webhelp import Browser

from ourmail.lists import requests
from ourmail.lists.model import ListSettings, Member
from ourmail.web.listpublic import client_key
from tests.lists.listreqhelp import LIST, context, token_of

ANNA = "anna@far.test"
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_public_pages(tmp_path: Path) -> None:
    ctx, box, _ = context(tmp_path, threads=True, requests_per_client=3)
    ctx.db.create(ListSettings("hidden@example.test", advertised=False), 0.0)
    ctx.db.subscribe(LIST, [Member("bob@far.test")])
    with running_server(tmp_path / "server") as srv:
        assert srv.server.web is not None
        srv.server.web.services.lists = SimpleNamespace(ctx=ctx)  # type: ignore[assignment]
        browser = Browser(srv)

        page = browser.get(f"/lists/{LIST}")
        assert page.status == 200 and "Team" in page.text and 'name="address"' in page.text
        assert "bob@far.test" not in page.text
        missing = browser.get("/lists/nothing@example.test")
        hidden = browser.get("/lists/hidden@example.test")
        assert missing.status == hidden.status == 404 and missing.body == hidden.body

        asking = {"address": ANNA, "action": "subscribe"}
        assert browser.post(f"/lists/{LIST}", asking).status == 403  # no CSRF token
        asking["csrf"] = page.csrf()
        asked = browser.post(f"/lists/{LIST}", asking)
        member = browser.post(f"/lists/{LIST}", asking | {"address": "bob@far.test"})
        assert asked.status == member.status == 200
        assert asked.body == member.body  # membership is not told
        assert [rcpts for _, rcpts, _ in box.sent] == [[ANNA]]
        bad = browser.post(f"/lists/{LIST}", asking | {"address": "not an address"})
        assert bad.status == 400
        assert browser.post(f"/lists/{LIST}", asking | {"address": "c@far.test"}).status == 200
        limited = browser.post(f"/lists/{LIST}", asking | {"address": "d@far.test"})
        assert limited.status == 429 and len(box.sent) == 2

        token = token_of(box.sent[0][2])
        ask = browser.get(f"/lists/confirm/{token}")
        assert ask.status == 200 and ANNA in ask.text and "<button" in ask.text
        assert ctx.db.member(LIST, ANNA) is None  # GET never acts
        done = browser.post(f"/lists/confirm/{token}", {"csrf": ask.csrf()})
        assert done.status == 200 and "now subscribed" in done.text
        assert ctx.db.member(LIST, ANNA) is not None
        again = browser.post(f"/lists/confirm/{token}", {"csrf": ask.csrf()})
        assert again.status == 404

        lst = ctx.db.get(LIST)
        assert lst is not None
        url = requests.unsubscribe_url(ctx, lst, ANNA).removeprefix(ctx.web_url)
        client = Browser(srv)  # a mail provider's POST: no cookies, no login, no CSRF token
        shown = client.get(url)
        assert shown.status == 200 and "<button" in shown.text and not shown.cookies
        assert ctx.db.member(LIST, ANNA) is not None  # RFC 8058 §3.2: GET does not act
        assert client.request("POST", url, b"", FORM).status == 400
        # No list, no member, a wrong signature: one answer, which tells nothing.
        forged = client.request("POST", url[:-4] + "0000", ONE_CLICK, FORM)
        no_list = url.replace(quote(LIST, safe=""), "nothing%40example.test")
        no_list = client.request("POST", no_list, ONE_CLICK, FORM)
        stranger = url.replace(quote(ANNA, safe=""), "zed%40far.test")
        stranger = client.request("POST", stranger, ONE_CLICK, FORM)
        assert forged.status == no_list.status == stranger.status == 404
        assert forged.body == no_list.body == stranger.body
        assert ctx.db.member(LIST, ANNA) is not None
        gone = client.request("POST", url, ONE_CLICK, FORM)
        assert gone.status == 200 and not gone.cookies and not client.cookies
        assert ctx.db.member(LIST, ANNA) is None


def test_rate_limit_keys_ipv6_clients_by_their_64() -> None:
    """One IPv6 client owns a whole /64 (RFC 4291 §2.5.4): counting each address would give
    it 2**64 chances; an IPv4 address (mapped or not) is its own key."""
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("192.0.2.7") == client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("") == "" and client_key("unix-socket") == "unix-socket"


def test_a_confirmation_that_fails_on_the_web_can_be_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, box, _ = context(tmp_path, threads=True)
    confirm = requests.confirm
    failures = [RuntimeError("the database is locked")]

    async def flaky(*args: Any) -> str:
        if failures:
            raise failures.pop()
        return await confirm(*args)

    monkeypatch.setattr(requests, "confirm", flaky)
    with running_server(tmp_path / "server") as srv:
        assert srv.server.web is not None
        srv.server.web.services.lists = SimpleNamespace(ctx=ctx)  # type: ignore[assignment]
        browser = Browser(srv)
        page = browser.get(f"/lists/{LIST}")
        browser.post(
            f"/lists/{LIST}", {"address": ANNA, "action": "subscribe", "csrf": page.csrf()}
        )
        token = token_of(box.sent[0][2])
        ask = browser.get(f"/lists/confirm/{token}")
        failed = browser.post(f"/lists/confirm/{token}", {"csrf": ask.csrf()})
        assert failed.status >= 500 and ctx.db.member(LIST, ANNA) is None
        done = browser.post(f"/lists/confirm/{token}", {"csrf": ask.csrf()})
        assert done.status == 200 and "now subscribed" in done.text
        assert ctx.db.member(LIST, ANNA) is not None
