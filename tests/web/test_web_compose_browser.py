"""The compose page in a real headless Chromium (Debian's ``chromium`` through playwright):
reply to a message with an attachment uploaded by the page's script, send with Ctrl+Enter,
and see it arrive over IMAP byte-correct (issue 16 points 7-8)."""

from __future__ import annotations

import email
import email.policy
import smtplib
from pathlib import Path

import pytest
from browserhelp import chromium, log_in, needs_chromium, new_page
from composehelp import imap_messages
from conftest import RunningServer

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = needs_chromium
BOB = "bob@example.test"


def test_reply_with_an_attachment_in_chromium(mailserver: RunningServer, tmp_path: Path) -> None:
    srv = mailserver
    srv.add_user(BOB)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail(
            BOB,
            [srv.user],
            b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\n"
            b"Subject: Photos\r\nMessage-ID: <photos@example.test>\r\n\r\nSend them?\r\n",
        )
    photo = tmp_path / "φωτογραφία.jpg"
    content = bytes(range(256)) * 2000 + b"\xff\xd9"
    photo.write_bytes(content)
    base = f"https://127.0.0.1:{srv.port('web')}"
    with chromium() as browser:
        page, problems = new_page(browser)
        log_in(page, base, srv)
        page.goto(f"{base}/compose?reply=INBOX:1")
        assert page.get_by_label("Subject").input_value() == "Re: Photos"
        assert "> Send them?" in page.locator("#body").input_value()
        # Esc asks first; dismissed, nothing is lost.
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.keyboard.press("Escape")
        assert page.url == f"{base}/compose?reply=INBOX:1"
        page.get_by_label("Attach files").set_input_files(str(photo))
        attached = page.locator("#attachment-list input[name=attachment]")
        attached.wait_for()
        assert "φωτογραφία.jpg" in page.locator("#attachment-list").inner_text()
        # Completion from the directory fills the datalist.
        page.get_by_label("Cc", exact=True).fill("bo")
        page.locator("#cc-choices option").first.wait_for(state="attached")
        assert page.locator("#cc-choices option").first.get_attribute("value") == BOB
        page.get_by_label("Cc", exact=True).fill("")
        body = page.locator("#body")
        body.press("Control+Home")
        body.type("Here they are.")
        body.press("Control+Enter")
        page.wait_for_url(f"{base}/compose/sent")
        assert "Your message was sent." in page.content()
        assert not problems, problems  # no CSP violation, no failed request
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["In-Reply-To"] == "<photos@example.test>"
    assert message["Subject"] == "Re: Photos"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.startswith("Here they are.") and "> Send them?" in text
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "φωτογραφία.jpg"
    assert attachment.get_payload(decode=True) == content
    [(_, flags, _)] = imap_messages(srv)
    assert b"\\Answered" in flags


def test_rich_text_in_chromium(mailserver: RunningServer) -> None:
    srv = mailserver
    srv.add_user(BOB)
    base = f"https://127.0.0.1:{srv.port('web')}"
    with chromium() as browser:
        page, problems = new_page(browser)
        log_in(page, base, srv)
        page.goto(f"{base}/compose")
        page.get_by_label("To", exact=True).fill(BOB)
        page.get_by_label("Subject").fill("Formatted")
        page.locator("#body").fill("Plain start")
        page.get_by_role("button", name="Rich text").click()
        editor = page.locator("#editor")
        assert editor.inner_text().strip() == "Plain start"
        editor.press("End")
        editor.type(" and ")
        page.get_by_role("button", name="Bold").click()
        editor.type("bold words")
        page.get_by_role("button", name="Send").click()
        page.wait_for_url(f"{base}/compose/sent")
        assert not problems, problems
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.get_payload()  # type: ignore[misc]
    assert plain.get_content().strip() == "Plain start and bold words"
    assert "<b>bold words</b>" in rich.get_content()
