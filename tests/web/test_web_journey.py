"""Issue 16's end-to-end test in a real headless Chromium (Debian's ``chromium`` through
playwright), as a person meets the webmail: log in, read a message delivered over SMTP, reply
with an attachment, see the reply arrive over IMAP byte-correct, move the message, find it by
searching, log out."""

from __future__ import annotations

import email
import email.policy
import smtplib
from pathlib import Path

import pytest
from browserhelp import chromium, needs_chromium, new_page
from composehelp import imap_messages
from conftest import RunningServer

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = needs_chromium
BOB = "bob@example.test"


def test_read_reply_move_search_and_log_out(mailserver: RunningServer, tmp_path: Path) -> None:
    srv = mailserver
    srv.add_user(BOB)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail(
            BOB,
            [srv.user],
            "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\n"
            "Subject: Budget 2027\r\nMessage-ID: <budget@example.test>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            "Please send the figures. Ευχαριστώ!\r\n".encode(),
        )
    sheet = tmp_path / "προϋπολογισμός 2027.ods"
    content = bytes(range(256)) * 3000  # binary, 750 KB: every byte value
    sheet.write_bytes(content)
    base = f"https://127.0.0.1:{srv.port('web')}"
    with chromium() as browser:
        page, problems = new_page(browser)
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))

        # Log in: the inbox, with the new message in it.
        page.goto(f"{base}/")
        page.get_by_label("Address").fill(srv.user)
        page.get_by_label("Password").fill(srv.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        row = page.locator("#list tr.row", has_text="Budget 2027")
        playwright.expect(row).to_have_count(1)

        # Read it.
        row.get_by_role("link", name="Budget 2027").click()
        page.wait_for_url(f"{base}/message?**")
        playwright.expect(page.locator(".text-body")).to_contain_text("Ευχαριστώ!")

        # Reply with an attachment.
        page.get_by_role("link", name="Reply", exact=True).click()
        page.wait_for_url(f"{base}/compose?**")
        assert page.get_by_label("Subject").input_value() == "Re: Budget 2027"
        page.get_by_label("Attach files").set_input_files(str(sheet))
        page.locator("#attachment-list input[name=attachment]").wait_for()
        body = page.locator("#body")
        body.press("Control+Home")
        body.type("Here they are.")
        page.get_by_role("button", name="Send").click()
        page.wait_for_url(f"{base}/compose/sent")

        # Move the original to Archive.
        page.goto(f"{base}/")
        row = page.locator("#list tr.row", has_text="Budget 2027")
        row.locator("input[name=m]").check()
        page.get_by_label("Move to").select_option("Archive")
        page.get_by_role("button", name="Move", exact=True).click()
        playwright.expect(page.locator("#list tr.row", has_text="Budget 2027")).to_have_count(0)

        # Find it again by searching every folder.
        page.keyboard.press("/")
        page.get_by_label("Subject").fill("budget")
        page.get_by_label("In all folders").check()
        page.locator("[role=search] button[type=submit]").click()
        # The original, in Archive, and the reply, in Sent.
        found = page.locator("#list tr.row", has_text="Budget 2027")
        playwright.expect(found).to_have_count(2)
        playwright.expect(found.filter(has_text="(Archive)")).to_have_count(1)
        playwright.expect(found.filter(has_text="(Sent)")).to_contain_text("Re: Budget 2027")

        # Log out: the session is over on the server.
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(f"{base}/login")
        page.goto(f"{base}/")
        assert page.url == f"{base}/login"
        assert not problems, problems  # no CSP violation, no failed request
        assert outside == []  # nothing but ourmail was asked for anything

    # Bob receives the reply over IMAP, the attachment byte for byte.
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    reply = email.message_from_bytes(raw, policy=email.policy.default)
    assert reply["Subject"] == "Re: Budget 2027"
    assert reply["In-Reply-To"] == "<budget@example.test>"
    text = reply.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.startswith("Here they are.") and "> Please send the figures." in text
    [attachment] = list(reply.iter_attachments())
    assert attachment.get_filename() == "προϋπολογισμός 2027.ods"
    assert attachment.get_payload(decode=True) == content
    # The original was answered and moved: \Answered, in Archive, no longer in the INBOX.
    assert imap_messages(srv) == []
    [(_, flags, _)] = imap_messages(srv, "Archive")
    assert b"\\Answered" in flags
