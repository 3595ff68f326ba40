"""The hostile corpus in a real headless Chromium: no script runs, nothing is fetched from outside.

A loopback HTTP server serves a parent page that defines the canary ``window.__pwned = []``
and frames every payload (each payload's script would push its number onto
``top.__pwned``).  Every request the browser makes is recorded, and any to a host but the
loopback server is aborted.  Three runs:

- ``raw``: the payloads unsanitised, same-origin, no CSP.  The control: it shows the harness
  sees scripts run and beacons fire (and ``sandboxed``, the same with scripts allowed in a
  sandbox, shows it sees scripts in a foreign-origin frame too).
- ``bare``: sanitised, still same-origin and without CSP, so only the sanitiser stands in the
  way: the canary must stay empty and no request leave loopback.
- ``framed``: sanitised and served with ``frame_headers()`` (sandbox, CSP), as the message
  view will serve it: the same, and ``cid:`` images still load from ourmail.
- ``csp``: unsanitised but with ``frame_headers()``, so only the frame's policy stands in the
  way: the same.  Either wall holds alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import xsscorpus
from browserhelp import chromium, needs_chromium
from playwright.sync_api import Browser, Route

from ourmail.web.sanitise import frame_document, frame_headers, sanitise

pytestmark = needs_chromium
CID_URL = "/message/7/part/2"
# A 1x1 transparent PNG, the inline part the corpus's cid: URLs name.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
BENIGN = [xsscorpus.NEWSLETTER, xsscorpus.THUNDERBIRD, xsscorpus.OUTLOOK]


def payload(index: int) -> str:
    """The markup of one frame's body (corpus payloads, then the benign mails)."""
    # Logged first: a sandboxed frame is a foreign origin, where the push throws.
    canary = f"console.log({index}),top.__pwned.push({index})"
    return (xsscorpus.CORPUS + BENIGN)[index].replace("PWN", canary)


def frame(mode: str, index: int, allow_remote: bool) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``/frame/<mode>/<index>``."""
    markup = payload(index)
    if mode == "raw":
        return {"Content-Type": "text/html; charset=utf-8"}, markup.encode()
    if mode == "csp":
        return frame_headers(allow_remote), markup.encode()
    if mode == "sandboxed":
        policy = {"Content-Security-Policy": "sandbox allow-scripts"}
        return {"Content-Type": "text/html; charset=utf-8", **policy}, markup.encode()
    safe = sanitise(markup, allow_remote=allow_remote, cid={xsscorpus.CID: CID_URL}.get)
    headers = frame_headers(allow_remote) if mode == "framed" else {"Content-Type": "text/html"}
    return headers, frame_document(safe).encode()


class Handler(BaseHTTPRequestHandler):
    """``/page/<mode>[/remote]``, ``/frame/<mode>/<n>[/remote]`` and the cid part."""

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if self.path == CID_URL:
            self.reply({"Content-Type": "image/png"}, PNG)
        elif parts[0] == "page" and len(parts) >= 2:
            suffix = "/remote" if parts[-1] == "remote" else ""
            frames = "".join(
                f'<iframe src="/frame/{parts[1]}/{n}{suffix}" width="300" height="200"></iframe>'
                for n in range(len(xsscorpus.CORPUS) + len(BENIGN))
            )
            page = f"<!DOCTYPE html><script>window.__pwned = [];</script><body>{frames}</body>"
            self.reply({"Content-Type": "text/html"}, page.encode())
        elif parts[0] == "frame" and len(parts) >= 3 and parts[2].isdigit():
            self.reply(*frame(parts[1], int(parts[2]), allow_remote=parts[-1] == "remote"))
        else:
            self.send_error(404)

    def reply(self, headers: dict[str, str], body: bytes) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as opened:
        yield opened


def load(browser: Browser, server: str, path: str) -> tuple[list[int], list[str]]:
    """Load a page; the payloads whose script ran and every URL the browser asked for.

    A payload that ran is in the canary ``top.__pwned`` or, from a sandboxed frame that
    cannot reach it, in the console log.
    """
    context = browser.new_context()
    requested: list[str] = []
    logged: set[int] = set()

    def note(kind: str, text: str) -> None:
        if kind == "log" and text.lstrip("-").isdigit():
            logged.add(int(text))

    local = urlsplit(server).netloc

    def route(route: Route) -> None:
        requested.append(route.request.url)
        if urlsplit(route.request.url).netloc == local:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.on("console", lambda message: note(message.type, message.text))
    try:
        page.goto(server + path, wait_until="load")
        page.wait_for_timeout(1500)  # handlers on error, focus, animation, refresh
        pwned = page.evaluate("window.__pwned")
        pwned = set(pwned) if isinstance(pwned, list) else {-2}  # -2: the canary replaced
        return sorted(pwned | logged), requested
    finally:
        context.close()


def outside(server: str, requested: list[str]) -> list[str]:
    return [url for url in requested if not url.startswith(server + "/")]


def test_the_control_the_raw_corpus_runs_script_and_fires_beacons(
    browser: Browser, server: str
) -> None:
    pwned, requested = load(browser, server, "/page/raw")
    assert len(pwned) >= 20, pwned
    assert len({url for url in outside(server, requested) if "evil.example" in url}) >= 10


def test_the_control_scripts_in_a_sandboxed_frame_are_seen(browser: Browser, server: str) -> None:
    pwned, _ = load(browser, server, "/page/sandboxed")
    assert len(pwned) >= 20, pwned


def test_the_frame_policy_alone_stops_the_raw_corpus(browser: Browser, server: str) -> None:
    pwned, requested = load(browser, server, "/page/csp")
    assert pwned == []
    assert outside(server, requested) == []


@pytest.mark.parametrize("mode", ["bare", "framed"])
def test_sanitised_no_script_runs_and_nothing_leaves_loopback(
    browser: Browser, server: str, mode: str
) -> None:
    pwned, requested = load(browser, server, f"/page/{mode}")
    assert pwned == []
    assert outside(server, requested) == []
    frames = len(xsscorpus.CORPUS) + len(BENIGN)
    assert sum("/frame/" in url for url in requested) == frames
    # cid: images (RFC 2392) still load, from ourmail, past the frame's img-src 'self'.
    assert server + CID_URL in requested


def test_framed_with_remote_content_allowed_still_runs_no_script(
    browser: Browser, server: str
) -> None:
    pwned, requested = load(browser, server, "/page/framed/remote")
    assert pwned == []
    # The reader's choice is honoured: the newsletter's remote image is asked for.
    assert "https://tracker.example/open.gif" in requested


def test_benign_mail_shows_its_text_in_the_framed_page(browser: Browser, server: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        index = len(xsscorpus.CORPUS)  # the newsletter
        page.goto(f"{server}/frame/framed/{index}", wait_until="load")
        text = page.locator("body").inner_text()
        assert "Council newsletter" in text and "Opening hours" in text
        index += 2  # Outlook
        page.goto(f"{server}/frame/framed/{index}", wait_until="load")
        assert "Καλημέρα σας," in page.locator("body").inner_text()
    finally:
        context.close()
