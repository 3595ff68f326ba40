"""The admin console's queue pages mark a VERP envelope (a list's post) beside its sender."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

from conftest import running_server
from webhelp import Browser

from ourmail.auth.passwords import hash_password
from ourmail.queue.files import Envelope, QueuedRecipient, QueueFiles, new_id

PASSWORD = "postmaster's own long password"


def test_the_queue_pages_mark_verp_envelopes(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        srv.server.accounts.set_password("postmaster@example.test", hash_password(PASSWORD))
        files = QueueFiles(srv.data / "queue")
        now = time.time()
        verp, plain = new_id(now), new_id(now)
        for qid, is_verp in ((verp, True), (plain, False)):
            envelope = Envelope(
                id=qid,
                sender="team-bounces@example.test",
                recipients=[QueuedRecipient("bob@remote.test")],
                created=now,
                size=20,
                held=True,  # the runner leaves it alone
                verp=is_verp,
            )
            files.add(envelope, b"Subject: news\r\n\r\nhi\r\n")
        browser = Browser(srv)
        assert browser.login("postmaster@example.test", PASSWORD).status == 303
        page = browser.get("/admin/queue").text
        row = page[page.index(verp) :].split("</tr>")[0]
        assert "one sender per recipient" in row
        assert "one sender per recipient" not in page[page.index(plain) :].split("</tr>")[0]
        shown = browser.get("/admin/queue/message?" + urlencode({"id": verp})).text
        assert "VERP: each recipient is sent with its own return path" in shown
        shown = browser.get("/admin/queue/message?" + urlencode({"id": plain})).text
        assert "VERP:" not in shown
