"""The message view in a real headless Chromium (Debian's ``chromium``, driven by playwright):
the hostile corpus (tests/xsscorpus.py) delivered over SMTP and opened through the real
message page and its frames, logged in (issue 16, "Hostile mail"); inline images, keyboard.

Every payload's script would push its number onto the page's canary ``top.__pwned`` (set by
an init script, as the page itself has no inline script) or, from the sandboxed frame that
cannot reach it, log it to the console.  Every request the browser makes is recorded
(playwright's request event), and any to a host but ourmail is aborted.
"""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import pytest
import xsscorpus
from browserhelp import chromium, needs_chromium
from conftest import RunningServer, running_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from ourmail.web.shown import MAX_FRAMES

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, ConsoleMessage, Route  # noqa: E402

pytestmark = needs_chromium
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
BENIGN = [xsscorpus.NEWSLETTER, xsscorpus.THUNDERBIRD, xsscorpus.OUTLOOK]


def payload(index: int) -> str:
    canary = f"console.log({index}),top.__pwned.push({index})"
    return (xsscorpus.CORPUS + BENIGN)[index].replace("PWN", canary)


def part(content_type: str, data: bytes, extra: str = "") -> str:
    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    return (
        f"--H\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n"
        f"{extra}\r\n{encoded}"
    )


def hostile_message(indices: range) -> bytes:
    """A message whose HTML parts are these payloads of the corpus and the benign mails,
    each shown in a frame of its own, and the inline image the corpus's ``cid:`` URLs name."""
    bodies = [part("text/html; charset=utf-8", payload(n).encode()) for n in indices]
    image = part("image/png", PNG, f"Content-ID: <{xsscorpus.CID}>\r\n")
    return (
        "From: Mallory <mallory@else.test>\r\nTo: alice@example.test\r\nSubject: Hostile\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="H"\r\n\r\n'
        + "".join(bodies)
        + image
        + "--H--\r\n"
    ).encode()


def send(srv: RunningServer, raw: bytes) -> int:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("mallory@else.test", [srv.user], raw)

    def last() -> int:
        folder = srv.server.store.user(srv.user).folder("INBOX")
        folder.sync()
        return int(folder.uids()[-1])

    return int(blockingCallFromThread(reactor, last))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("readbrowser")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as opened:
        yield opened


class Visit:
    """A logged-in browser context that records requests, responses, console and canary."""

    def __init__(self, browser: Browser, srv: RunningServer) -> None:
        self.base = f"https://127.0.0.1:{srv.port('web')}"
        self.context = browser.new_context(ignore_https_errors=True, locale="en-GB")
        self.requested: list[str] = []
        self.responses: dict[str, int] = {}
        self.logged: set[int] = set()
        #: URL -> whether the session cookie went with it.
        self.cookie_sent: dict[str, bool] = {}
        self.errors: list[str] = []
        local = urlsplit(self.base).netloc

        def route(route: Route) -> None:
            if urlsplit(route.request.url).netloc == local:
                route.continue_()
            else:
                route.abort()

        self.context.route("**/*", route)
        self.context.add_init_script("window.__pwned = [];")
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requested.append(r.url))
        self.page.on("response", lambda r: self.responses.__setitem__(r.url, r.status))
        self.page.on("dialog", lambda d: d.dismiss())
        self.page.on(
            "requestfinished",
            lambda r: self.cookie_sent.__setitem__(
                r.url, "ourmail_session" in r.all_headers().get("cookie", "")
            ),
        )
        self.page.on("console", self.console)
        self.page.goto(f"{self.base}/login")
        self.page.get_by_label("Address").fill(srv.user)
        self.page.get_by_label("Password").fill(srv.password)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(f"{self.base}/")

    def console(self, message: ConsoleMessage) -> None:
        text = message.text
        if message.type == "log" and text.lstrip("-").isdigit():
            self.logged.add(int(text))
        elif message.type == "error":
            self.errors.append(text)

    def open(self, uid: int, **more: str) -> None:
        query = urlencode({"folder": "INBOX", "uid": str(uid), **more})
        self.page.goto(f"{self.base}/message?{query}", wait_until="load")

    def pwned(self) -> list[int]:
        canary = self.page.evaluate("window.__pwned")
        found = set(canary) if isinstance(canary, list) else {-2}  # -2: the canary replaced
        return sorted(found | self.logged)

    def outside(self) -> list[str]:
        return [u for u in self.requested if not u.startswith(self.base + "/")]

    def close(self) -> None:
        self.context.close()


def test_the_hostile_corpus_through_the_real_page_runs_nothing_and_fetches_nothing(
    browser: Browser, srv: RunningServer
) -> None:
    # A page frames at most MAX_FRAMES HTML bodies: the corpus comes in messages of that many.
    total = len(xsscorpus.CORPUS) + len(BENIGN)
    assert total >= 50
    chunks = [range(n, min(n + MAX_FRAMES, total)) for n in range(0, total, MAX_FRAMES)]
    uids = [send(srv, hostile_message(chunk)) for chunk in chunks]
    visit = Visit(browser, srv)
    framed = 0
    try:
        for n, (uid, chunk) in enumerate(zip(uids, chunks, strict=True)):
            # With remote images allowed once (tests/web/test_hostile_mail_browser.py allows
            # them for the whole corpus in frames): the suite's time is bounded.
            for images in ({}, {"images": "1"}) if n == 0 else ({},):
                visit.requested.clear()
                visit.open(uid, **images)
                visit.page.wait_for_timeout(500)  # handlers on error, focus, animation, refresh
                assert visit.pwned() == []
                bodies = [u for u in visit.requested if "/message/body?" in u]
                assert len(bodies) == len(chunk)
                assert all(visit.responses.get(u) == 200 for u in bodies)
                framed += len(bodies) if not images else 0
                # Why the grant: the frame (opaque origin) sends no session cookie, the page does.
                images_loaded = [u for u in visit.requested if "/message/part?grant=" in u]
                assert not any(visit.cookie_sent.get(u) for u in images_loaded)
                assert all(visit.responses.get(u) == 200 for u in images_loaded)
                assert all(visit.cookie_sent.get(u) for u in bodies)
                if not images:
                    assert visit.outside() == []
                else:  # the reader's choice: remote images only, and never from script
                    assert all(urlsplit(u).scheme in ("https", "http") for u in visit.outside()), (
                        visit.outside()
                    )
            if len(xsscorpus.CORPUS) in chunk:  # the benign newsletter still reads as one
                at = chunk.index(len(xsscorpus.CORPUS))
                frame = visit.page.frame_locator("iframe.body-frame").nth(at)
                assert "Council newsletter" in frame.locator("body").inner_text()
        assert framed == total
    finally:
        visit.close()


def test_a_message_of_many_html_parts_frames_only_some(
    browser: Browser, srv: RunningServer
) -> None:
    uid = send(srv, hostile_message(range(MAX_FRAMES + 5)))
    visit = Visit(browser, srv)
    try:
        visit.open(uid)
        assert visit.page.locator("iframe.body-frame").count() == MAX_FRAMES
        assert visit.page.get_by_role("link", name="Download this part").count() == 5
        assert visit.pwned() == []
    finally:
        visit.close()


def test_the_page_itself_is_clean_and_the_keyboard_works(
    browser: Browser, srv: RunningServer
) -> None:
    older = send(srv, b"From: Bob <bob@else.test>\r\nSubject: Older one\r\n\r\nolder\r\n")
    uid = send(
        srv,
        b"From: Bob <bob@else.test>\r\nSubject: Keyboard\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        b"Content-Type: text/plain\r\n\r\nSee https://example.org/page\r\n",
    )
    visit = Visit(browser, srv)
    try:
        visit.open(uid)
        page = visit.page
        assert page.locator(".subject").inner_text() == "Keyboard"
        link = page.get_by_role("link", name="https://example.org/page")
        assert link.get_attribute("rel") == "noopener noreferrer"
        # The date is shown in the reader's time zone by the script; the server's text kept.
        assert page.locator("time").get_attribute("title")
        page.keyboard.press("j")  # the older message
        page.wait_for_url(f"**/message?folder=INBOX&uid={older}")
        assert page.locator(".subject").inner_text() == "Older one"
        page.keyboard.press("k")
        page.wait_for_url(f"**/message?folder=INBOX&uid={uid}")
        # A phone: nothing wider than its 360 px screen.
        page.set_viewport_size({"width": 360, "height": 740})
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.keyboard.press("u")
        page.wait_for_url("**/mail?folder=INBOX")
        assert visit.errors == [] or all("404" in e for e in visit.errors), visit.errors
    finally:
        visit.close()
