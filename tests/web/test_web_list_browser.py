"""The message list in a real headless Chromium (Debian's ``chromium`` driven by playwright):
select rows and delete them, drag a row onto a folder of the tree, the keyboard keys, and the
list refreshing when ``ourmail:folder-changed`` fires, all without a CSP violation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browserhelp import chromium, log_in, needs_chromium, new_page
from conftest import RunningServer, running_server
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

playwright = pytest.importorskip("playwright.sync_api")

expect = playwright.expect
pytestmark = needs_chromium


def append(srv: RunningServer, folder: str, subject: str) -> None:
    data = f"From: Bob <bob@else.test>\r\nSubject: {subject}\r\n\r\nHello.\r\n".encode()

    def run() -> object:
        return srv.server.store.user(srv.user).folder(folder).append(data)

    blockingCallFromThread(reactor, run)


def count(srv: RunningServer, folder: str) -> int:
    def run() -> int:
        f = srv.server.store.user(srv.user).folder(folder)
        f.sync()
        return len(f.uids())

    result: int = blockingCallFromThread(reactor, run)
    return result


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as srv:
        yield srv


def test_select_delete_drag_keys_and_refresh_in_chromium(server: RunningServer) -> None:
    for subject in ("alpha", "beta", "gamma", "delta"):
        append(server, "INBOX", subject)
    base = f"https://127.0.0.1:{server.port('web')}"
    with chromium() as browser:
        page, problems = new_page(browser)
        log_in(page, base, server)
        rows = page.locator("#list tr.row")
        assert rows.count() == 4

        # Select two rows by their checkboxes and delete them: no page load, the list
        # is swapped in place.
        page.evaluate("window.__same_page = true")
        page.get_by_role("checkbox", name="Select: Bob, alpha").check()
        page.get_by_role("checkbox", name="Select: Bob, beta").check()
        assert page.locator("#list tr.selected").count() == 2
        page.get_by_role("button", name="Delete", exact=True).click()
        page.wait_for_selector("#list .notice")
        assert page.locator("#list .notice").inner_text() == "Moved to the Trash."
        assert rows.count() == 2
        assert page.evaluate("window.__same_page") is True
        assert count(server, "Trash") == 2

        # Select all, then none.
        page.get_by_label("Select all").check()
        assert page.locator("#list tr.selected").count() == 2
        page.get_by_label("Select all").uncheck()

        # Drag a row onto the Archive folder of the tree.
        page.locator("#list tr.row", has_text="gamma").drag_to(
            page.locator('#folders li[data-folder="Archive"]')
        )
        expect(page.locator("#list tr.row")).to_have_count(1)
        assert count(server, "Archive") == 1
        assert page.locator("#list tr.row").inner_text().count("delta") == 1

        # Keys: j focuses the first row, x selects it, ! reports it as spam.
        page.locator("h1").click()
        page.keyboard.press("j")
        focused = page.evaluate("document.activeElement.closest('tr').dataset.uid")
        assert focused
        page.keyboard.press("x")
        assert page.locator("#list tr.selected").count() == 1
        page.keyboard.press("!")
        expect(page.locator("#list tr.row")).to_have_count(0)
        assert count(server, "Junk") == 1

        # New mail: the live-update event makes the list fetch itself again.
        append(server, "INBOX", "epsilon")
        append(server, "INBOX", "zeta")
        page.evaluate(
            "document.dispatchEvent(new CustomEvent('ourmail:folder-changed',"
            " {detail: {folder: 'INBOX'}}))"
        )
        page.wait_for_selector("#list tr.row:has-text('epsilon')")
        assert page.locator("#folders li[data-folder='INBOX'] .count").inner_text() == "2"

        # # deletes the focused row when nothing is selected.
        page.locator("h1").click()
        page.keyboard.press("j")
        page.keyboard.press("#")
        expect(page.locator("#list tr.row")).to_have_count(1)
        assert count(server, "Trash") == 3
        assert "epsilon" in page.locator("#list tr.row").inner_text()

        assert not problems, problems  # no CSP violation, no failed request

        # Enter on a row's link opens the message view's address (another part's page).
        page.locator("#list tr.row td.subject a").focus()
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/message?folder=INBOX&uid=*")

        # On a 360-pixel-wide phone the list fits the screen's width.
        page.set_viewport_size({"width": 360, "height": 740})
        page.goto(f"{base}/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert page.locator("#list tr.row td.subject a").is_visible()
