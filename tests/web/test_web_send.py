"""Sending from the webmail goes through the submission rules (issue 16 point 8): local
delivery byte-correct over IMAP, the outbound queue for other domains, sender ownership,
the hourly rates shared with SMTP submission, the Sent copy, Greek subjects and bodies."""

from __future__ import annotations

import email
import email.policy
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from composehelp import imap_messages, logged_in, multipart, post_form
from conftest import RunningServer, client_tls, dns_zone, running_server
from twisted.internet import defer
from twisted.internet.task import Clock

from ourmail.config import SubmissionSettings
from ourmail.secure.dkimkeys import KeyStore

BOB = "bob@example.test"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    # The queue's clock stands still: no retry while a test looks.
    with running_server(tmp_path, queue_clock=Clock()) as server:
        server.add_user(BOB)
        yield server


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def text_of(message: email.message.EmailMessage) -> str:
    """The plain body, with the line endings Python reads (CRLF on the wire) as ``\\n``."""
    return str(message.get_body(("plain",)).get_content()).replace("\r\n", "\n")


def test_send_to_a_local_user_with_an_attachment_arrives_byte_correct(
    srv: RunningServer,
) -> None:
    browser = logged_in(srv)
    token = browser.get("/compose").csrf()
    content = bytes(range(256)) * 300 + b"\x00end"
    body, kind = multipart(
        {
            "csrf": token,
            "from": srv.user,
            "to": f"Bob <{BOB}>",
            "subject": "Report",
            "body": "Hello Bob,\r\nthe report is attached.\r\n",
        },
        {"file": ("report.bin", "application/octet-stream", content)},
    )
    answer = browser.request("POST", "/compose/send", body, {"Content-Type": kind})
    assert answer.status == 303 and answer.headers["location"] == "/compose/sent"
    assert "Your message was sent." in browser.get("/compose/sent").text
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    message = parsed(raw)
    assert message["From"] == srv.user and message["To"] == f"Bob <{BOB}>"
    assert message["Subject"] == "Report" and message["Message-ID"] and message["Date"]
    assert text_of(message) == "Hello Bob,\nthe report is attached.\n"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "report.bin"
    assert attachment.get_payload(decode=True) == content
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    # The Sent copy is the same message, seen.
    [(_, flags, sent)] = imap_messages(srv, "Sent")
    assert b"\\Seen" in flags
    assert parsed(sent)["Message-ID"] == message["Message-ID"]


def test_a_greek_subject_and_body_are_encoded_correctly(srv: RunningServer) -> None:
    browser = logged_in(srv)
    subject, text = "Καλημέρα από την Αθήνα", "Γειά σου Μπομπ,\nτα λέμε αύριο.\n"
    answer = post_form(
        browser, "/compose/send", {"from": srv.user, "to": BOB, "subject": subject, "body": text}
    )
    assert answer.status == 303
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"=?utf-8?" in head  # RFC 2047 encoded words
    message = parsed(raw)
    assert message["Subject"] == subject
    plain = message.get_body(("plain",))
    assert plain.get_content_charset() == "utf-8"
    assert text_of(message) == text


def test_remote_recipients_go_to_the_outbound_queue(srv: RunningServer) -> None:
    # The queue tries at once; the tests' DNS never answers for this domain, so the message
    # waits in the queue (a temporary failure) instead of bouncing.
    dns_zone()[0].set_silent("web-queue.test")
    KeyStore(srv.data / "dkim").generate("example.test", "web", "ed25519")
    browser = logged_in(srv)
    rcpt = "carol@web-queue.test"
    fields = {"from": srv.user, "to": rcpt, "cc": BOB, "subject": "Out", "body": "x"}
    assert post_form(browser, "/compose/send", fields).status == 303
    queue = srv.server.queue
    [qid] = queue.files.ids()
    envelope = queue.files.read(qid)
    assert envelope.sender == srv.user
    assert [r.address for r in envelope.recipients] == [rcpt]
    stored = queue.files.content(qid)
    assert b"Subject: Out" in stored
    assert stored.startswith(b"DKIM-Signature:") and b"d=example.test" in stored  # at enqueue
    assert len(imap_messages(srv, user=BOB)) == 1  # the local one delivered at once


def test_bcc_recipients_get_the_message_but_are_not_shown(srv: RunningServer) -> None:
    browser = logged_in(srv)
    fields = {"from": srv.user, "to": srv.user, "bcc": BOB, "subject": "Quiet", "body": "x"}
    assert post_form(browser, "/compose/send", fields).status == 303
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    assert b"Bcc" not in raw and BOB.encode() not in raw.split(b"\r\n\r\n")[0]


def test_a_from_the_user_may_not_use_is_refused_and_nothing_is_sent(srv: RunningServer) -> None:
    browser = logged_in(srv)
    fields = {"from": BOB, "to": BOB, "subject": "Forged", "body": "x"}
    answer = post_form(browser, "/compose/send", fields)
    assert answer.status == 400
    assert "You may not send as bob@example.test." in answer.text
    assert imap_messages(srv, user=BOB) == []
    assert srv.server.queue.files.ids() == []


def test_unknown_local_recipient_and_bad_addresses_are_named(srv: RunningServer) -> None:
    browser = logged_in(srv)
    fields = {"from": srv.user, "to": "nobody@example.test", "subject": "x", "body": "x"}
    answer = post_form(browser, "/compose/send", fields)
    assert answer.status == 400
    assert "nobody@example.test cannot receive this message." in answer.text
    assert "550 5.1.1" in answer.text
    answer = post_form(browser, "/compose/send", {"from": srv.user, "to": "not an address"})
    assert answer.status == 400 and "These are not e-mail addresses: not an address" in answer.text
    assert post_form(browser, "/compose/send", {"from": srv.user}).status == 400
    # What was typed is kept in the form.
    assert 'value="not an address"' in answer.text
    assert imap_messages(srv, user=BOB) == []


def test_the_hourly_rate_is_shared_with_smtp_submission(tmp_path: Path) -> None:
    limits = SubmissionSettings(max_messages_per_hour=2, max_recipients_per_hour=10)
    with running_server(tmp_path, submission=limits) as srv:
        srv.add_user(BOB)
        # One message by SMTP submission...
        with smtplib.SMTP("127.0.0.1", srv.port("submission")) as s:
            s.starttls(context=client_tls())
            s.login(srv.user, srv.password)
            s.sendmail(srv.user, [BOB], f"From: {srv.user}\r\nSubject: smtp\r\n\r\nx\r\n")
        browser = logged_in(srv)
        fields = {"from": srv.user, "to": BOB, "subject": "web", "body": "x"}
        # ...one from the web, and the third is over the limit.
        assert post_form(browser, "/compose/send", fields).status == 303
        answer = post_form(browser, "/compose/send", fields)
        assert answer.status == 503
        assert "hourly sending limit" in answer.text and "451 4.7.1" in answer.text
        assert len(imap_messages(srv, user=BOB)) == 2


def test_a_forged_csrf_token_sends_nothing(srv: RunningServer) -> None:
    browser = logged_in(srv)
    fields = {"from": srv.user, "to": BOB, "subject": "x", "body": "x"}
    assert post_form(browser, "/compose/send", fields, csrf="forged").status == 403
    body, kind = multipart(fields, {})  # no token at all
    assert browser.request("POST", "/compose/send", body, {"Content-Type": kind}).status == 403
    assert imap_messages(srv, user=BOB) == []


def test_a_failure_while_sending_keeps_the_form_and_says_so(
    srv: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = srv.server.web
    assert web is not None and web.services.submission is not None
    monkeypatch.setattr(web.services.submission, "submit", lambda *args: defer.fail(OSError()))
    browser = logged_in(srv)
    fields = {"from": srv.user, "to": BOB, "subject": "Kept", "body": "my words"}
    answer = post_form(browser, "/compose/send", fields)
    assert answer.status == 503
    assert "The message could not be sent. Please try again later." in answer.text
    assert "my words" in answer.text and 'value="Kept"' in answer.text
    assert srv.server.queue.files.ids() == [] and imap_messages(srv, user=BOB) == []


def test_rich_text_goes_as_multipart_alternative_and_is_cleaned(srv: RunningServer) -> None:
    browser = logged_in(srv)
    markup = (
        "<p>Hello <b>Bob</b></p><ul><li>one</li></ul><script>alert(1)</script>"
        '<a href="javascript:alert(1)">bad</a> <a href="https://example.org/">site</a>'
        '<img src="https://tracker.test/x.gif" onerror="alert(1)">'
    )
    fields = {"from": srv.user, "to": BOB, "subject": "Rich", "body": "ignored", "html": markup}
    assert post_form(browser, "/compose/send", fields).status == 303
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    message = parsed(raw)
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.get_payload()  # type: ignore[misc]
    assert plain.get_content_type() == "text/plain" and rich.get_content_type() == "text/html"
    assert text_of(message) == "Hello Bob\n\n- one\n\nbad site <https://example.org/>\n"
    html = rich.get_content()
    assert "<b>Bob</b>" in html and '<a href="https://example.org/"' in html
    for gone in ("<script", "javascript:", "onerror", "tracker.test", "<img"):
        assert gone not in html
