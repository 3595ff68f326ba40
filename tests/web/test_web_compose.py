"""The compose page (issue 16 point 7): reply, reply-all and forward headers and quoting,
drafts saved, resumed and deleted on send, attachment uploads (limits, path tricks, clean-up)
and address completion."""

from __future__ import annotations

import email
import email.policy
import html
import http.client
import json
import re
import smtplib
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from composehelp import imap_messages, logged_in, multipart, post_form
from conftest import RunningServer, client_tls, running_server
from twisted.internet.task import Clock
from webhelp import Browser, Response

from ourmail.config import Limits
from ourmail.web.request import FORM_BODY

BOB = "bob@example.test"
ORIGINAL = (
    b"From: Bob Builder <bob@example.test>\r\n"
    b"To: alice@example.test, Dave <dave@remote.test>\r\n"
    b"Cc: Eve <eve@remote.test>, ALICE@example.test\r\n"
    b"Subject: Plans for Monday\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0200\r\n"
    b"Message-ID: <second@example.test>\r\n"
    b"References: <first@example.test>\r\n"
    b"In-Reply-To: <first@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Shall we meet at ten?\r\n"
    b"> earlier words\r\n"
    b"--b\r\n"
    b"Content-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="agenda.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQKYWdlbmRh\r\n"
    b"--b--\r\n"
)
AGENDA = b"%PDF-1.4\nagenda"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path, queue_clock=Clock()) as server:
        server.add_user(BOB)
        with smtplib.SMTP("127.0.0.1", server.port("smtp")) as s:
            s.sendmail(BOB, [server.user], ORIGINAL)
        yield server


def field(page: Response, name: str) -> str:
    """The value of an input of the compose page."""
    m = re.search(rf'name="{name}"[^>]*value="([^"]*)"', page.text)
    assert m, name
    return html.unescape(m.group(1))


def textarea(page: Response) -> str:
    m = re.search(r'<textarea id="body" name="body" rows="16">(.*?)</textarea>', page.text, re.S)
    assert m
    return html.unescape(m.group(1))


def attachment_ids(page: Response) -> list[str]:
    return re.findall(r'name="attachment" value="([0-9a-f]{16})"', page.text)


def form_of(page: Response, **changes: str | list[str]) -> dict[str, str | list[str]]:
    """The compose page's fields as a browser would post them back."""
    fields: dict[str, str | list[str]] = {
        name: field(page, name)
        for name in ("to", "cc", "bcc", "subject", "draft", "origin", "in_reply_to", "references")
    }
    fields |= {"from": "alice@example.test", "body": textarea(page)}
    fields["attachment"] = attachment_ids(page)
    fields |= changes
    return fields


def test_reply_has_the_thread_fields_the_quote_and_flags_the_original(srv: RunningServer) -> None:
    browser = logged_in(srv)
    page = browser.get("/compose?reply=INBOX:1")
    assert page.status == 200
    assert field(page, "subject") == "Re: Plans for Monday"
    assert field(page, "to") == '"Bob Builder" <bob@example.test>'
    assert field(page, "cc") == ""
    assert field(page, "in_reply_to") == "<second@example.test>"
    assert field(page, "references") == "<first@example.test> <second@example.test>"
    text = textarea(page)
    assert (
        "On 2026-03-02 10:00, Bob Builder wrote:\n> Shall we meet at ten?\n>> earlier words" in text
    )
    assert attachment_ids(page) == []  # a reply does not carry the attachments
    fields = form_of(page, body="Yes, at ten.\n" + text)
    assert post_form(browser, "/compose/send", fields).status == 303
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    reply = email.message_from_bytes(raw, policy=email.policy.default)
    assert reply["In-Reply-To"] == "<second@example.test>"
    assert reply["References"] == "<first@example.test> <second@example.test>"
    assert reply["Subject"] == "Re: Plans for Monday"
    [(_, flags, _)] = imap_messages(srv)
    assert b"\\Answered" in flags


def test_reply_all_leaves_out_the_users_own_addresses(srv: RunningServer) -> None:
    page = logged_in(srv).get("/compose?all=INBOX:1")
    assert field(page, "to") == '"Bob Builder" <bob@example.test>'
    assert field(page, "cc") == '"Dave" <dave@remote.test>, "Eve" <eve@remote.test>'


def test_a_reply_to_a_reply_gets_one_re(srv: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail(BOB, [srv.user], b"From: bob@example.test\r\nSubject: RE: lunch\r\n\r\nx\r\n")
    page = logged_in(srv).get("/compose?reply=INBOX:2")
    assert field(page, "subject") == "RE: lunch"
    assert field(page, "in_reply_to") == ""  # the original has no Message-ID: nothing to cite


def test_forward_inline_carries_the_attachments_and_flags_forwarded(srv: RunningServer) -> None:
    browser = logged_in(srv)
    page = browser.get("/compose?forward=INBOX:1")
    assert field(page, "subject") == "Fwd: Plans for Monday"
    text = textarea(page)
    assert "---------- Forwarded message ----------" in text
    assert 'From: "Bob Builder" <bob@example.test>' in text
    assert "Shall we meet at ten?" in text
    assert len(attachment_ids(page)) == 1 and "agenda.pdf" in page.text
    assert post_form(browser, "/compose/send", form_of(page, to=BOB)).status == 303
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    sent = email.message_from_bytes(raw, policy=email.policy.default)
    [agenda] = list(sent.iter_attachments())
    assert agenda.get_filename() == "agenda.pdf"
    assert agenda.get_content_type() == "application/pdf"
    assert agenda.get_payload(decode=True) == AGENDA
    [(_, flags, _)] = imap_messages(srv)
    assert b"$Forwarded" in flags


def test_forward_as_attachment_encloses_the_message_unchanged(srv: RunningServer) -> None:
    browser = logged_in(srv)
    page = browser.get("/compose?forward_attached=INBOX:1")
    assert field(page, "subject") == "Fwd: Plans for Monday" and textarea(page) == ""
    assert post_form(browser, "/compose/send", form_of(page, to=BOB)).status == 303
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    [(_, _, original)] = imap_messages(srv)
    assert b"Content-Type: message/rfc822" in raw
    assert original.split(b"\r\n\r\n", 1)[1] in raw  # enclosed as it is, not re-encoded


def test_a_missing_message_is_a_clear_404(srv: RunningServer) -> None:
    browser = logged_in(srv)
    for path in ("/compose?reply=INBOX:99", "/compose?forward=Nope:1", "/compose?all=INBOX:x"):
        page = browser.get(path)
        assert page.status == 404 and "That message no longer exists." in page.text


def test_drafts_are_saved_replaced_resumed_and_deleted_on_send(srv: RunningServer) -> None:
    browser = logged_in(srv)
    page = browser.get("/compose")
    fields = form_of(page, to=BOB, bcc="carol@remote.test", subject="Draft one", body="first")
    saved = post_form(browser, "/compose/draft", fields)
    assert saved.status == 200 and "Draft saved." in saved.text
    first = field(saved, "draft")
    [(uid, flags, raw)] = imap_messages(srv, "Drafts")
    assert first == f"Drafts:{uid}" and b"\\Draft" in flags and b"Bcc: carol@remote.test" in raw
    # Saved again (as the page's script does, asking for JSON): the old copy goes.
    body, kind = multipart({"csrf": saved.csrf(), **form_of(saved, body="second")}, {})
    answer = browser.request(
        "POST", "/compose/draft", body, {"Content-Type": kind, "Accept": "application/json"}
    )
    second = json.loads(answer.body)["draft"]
    [(uid2, _, raw2)] = imap_messages(srv, "Drafts")
    assert second == f"Drafts:{uid2}" and uid2 != uid and b"second" in raw2
    # Resumed: the form as it was saved.
    resumed = browser.get(f"/compose?draft={quote(second)}")
    assert field(resumed, "draft") == second
    assert field(resumed, "to") == BOB and field(resumed, "bcc") == "carol@remote.test"
    assert field(resumed, "subject") == "Draft one" and textarea(resumed).strip() == "second"
    assert post_form(browser, "/compose/send", form_of(resumed)).status == 303
    assert imap_messages(srv, "Drafts") == []
    [(_, _, delivered)] = imap_messages(srv, user=BOB)
    assert b"Bcc" not in delivered and b"X-Ourmail-Origin" not in delivered


def test_discard_deletes_only_from_drafts(srv: RunningServer) -> None:
    browser = logged_in(srv)
    answer = post_form(browser, "/compose/discard", {"draft": "INBOX:1"})
    assert answer.status == 303
    assert len(imap_messages(srv)) == 1  # a forged draft reference cannot expunge the inbox
    saved = post_form(browser, "/compose/draft", form_of(browser.get("/compose"), subject="x"))
    post_form(browser, "/compose/discard", {"draft": field(saved, "draft")})
    assert imap_messages(srv, "Drafts") == []


def upload(browser: Browser, name: str, content: bytes, token: str | None = None) -> Response:
    headers = {"X-Filename": quote(name), "Content-Type": "application/octet-stream"}
    if token is not None:
        headers["X-CSRF-Token"] = token
    return browser.request("POST", "/compose/upload", content, headers)


def upload_root(srv: RunningServer) -> Path:
    return srv.data / "web" / "uploads"


def test_uploads_are_streamed_to_disk_with_safe_names_and_removed_on_send(
    srv: RunningServer,
) -> None:
    browser = logged_in(srv)
    token = browser.get("/compose").csrf()
    content = bytes(range(256)) * 4096  # 1 MiB: spooled by twisted, copied in chunks
    answer = upload(browser, "../../etc/passwd", content, token)
    assert answer.status == 200
    info = json.loads(answer.body)
    assert info["filename"] == "passwd" and info["size"] == len(content)
    windows = json.loads(upload(browser, "C:\\temp\\..\\boot.ini", b"x", token).body)
    assert windows["filename"] == "boot.ini"
    files = sorted(p.name for p in upload_root(srv).rglob("*") if p.is_file())
    assert files == sorted(
        [info["id"], info["id"] + ".json", windows["id"], windows["id"] + ".json"]
    )
    assert all(p.resolve().is_relative_to(upload_root(srv)) for p in upload_root(srv).rglob("*"))
    fields = {"from": srv.user, "to": BOB, "subject": "files", "attachment": [info["id"]]}
    assert post_form(browser, "/compose/send", fields, token).status == 303
    [(_, _, raw)] = imap_messages(srv, user=BOB)
    [sent] = list(email.message_from_bytes(raw, policy=email.policy.default).iter_attachments())
    assert sent.get_filename() == "passwd" and sent.get_payload(decode=True) == content
    left = sorted(p.name for p in upload_root(srv).rglob("*") if p.is_file())
    assert left == sorted([windows["id"], windows["id"] + ".json"])  # the sent one is gone
    # Logging out ends the session, and its uploads go with it.
    browser.post("/logout", {"csrf": token})
    assert wait_until(lambda: not any(upload_root(srv).rglob("*.json")))


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_an_upload_without_the_csrf_token_is_refused(srv: RunningServer) -> None:
    browser = logged_in(srv)
    assert upload(browser, "a.txt", b"x").status == 403
    assert upload(browser, "a.txt", b"x", "forged").status == 403
    assert not any(upload_root(srv).rglob("*.json"))


def test_uploads_over_the_message_size_limit_get_413(tmp_path: Path) -> None:
    limits = Limits(max_message_size=400 * 1024)  # room for (400 - 64) * 3/4 = 252 KiB
    with running_server(tmp_path, limits=limits) as srv:
        browser = logged_in(srv)
        token = browser.get("/compose").csrf()
        too_big = upload(browser, "big.bin", b"x" * (600 * 1024), token)
        assert too_big.status == 413  # refused by the request itself: never kept
        assert upload(browser, "one.bin", b"x" * (200 * 1024), token).status == 200
        answer = upload(browser, "two.bin", b"x" * (100 * 1024), token)
        assert answer.status == 413
        assert json.loads(answer.body)["error"] == (
            "The attachments are too large to send together."
        )
        assert len(list(upload_root(srv).rglob("*.json"))) == 1


def test_large_bodies_only_for_a_session_and_never_as_a_parsed_form(srv: RunningServer) -> None:
    """Twisted parses a form body in memory before any route runs: only a logged-in session
    may send more than a login form's worth, and a form never more than FORM_BODY."""
    big = b"x" * (FORM_BODY + 1024)
    stranger = Browser(srv)
    assert upload(stranger, "big.bin", big).status == 413
    browser = logged_in(srv)
    token = browser.get("/compose").csrf()
    form = {"Content-Type": "multipart/form-data; boundary=b", "X-CSRF-Token": token}
    assert browser.request("POST", "/compose/upload", big, form).status == 413
    assert upload(browser, "big.bin", big, token).status == 200


def test_an_uploaded_message_or_multipart_goes_as_a_plain_file(srv: RunningServer) -> None:
    browser = logged_in(srv)
    token = browser.get("/compose").csrf()
    headers = {"X-Filename": "x.eml", "Content-Type": "message/rfc822", "X-CSRF-Token": token}
    answer = browser.request("POST", "/compose/upload", b"Subject: x\n\nbare LF\n", headers)
    assert json.loads(answer.body)["content_type"] == "application/octet-stream"


def test_address_completion_from_the_directory_and_recent_recipients(srv: RunningServer) -> None:
    for n in range(15):
        srv.add_user(f"user{n}@example.test")
    browser = logged_in(srv)

    def complete(q: str) -> list[dict[str, str]]:
        answer = browser.get(f"/compose/addresses?q={quote(q)}")
        assert answer.status == 200 and answer.headers["content-type"].startswith(
            "application/json"
        )
        return json.loads(answer.body)  # type: ignore[no-any-return]

    assert complete("b") == []  # too short
    assert [r["address"] for r in complete("bo")] == [BOB]
    assert len(complete("user")) == 10  # bounded
    fields = {"from": srv.user, "to": "Carol <carol@remote.test>", "subject": "hi"}
    assert post_form(browser, "/compose/send", fields).status == 303
    assert [r["address"] for r in complete("CAR")] == ["carol@remote.test"]
    assert browser.get("/compose/addresses?q=bo").status == 200
    assert Browser(srv).get("/compose/addresses?q=bo").status == 303  # not logged in


def test_the_compose_page_offers_the_users_aliases_as_from(srv: RunningServer) -> None:
    srv.server.accounts.set_alias("info@example.test", [srv.user])
    srv.server.accounts.set_alias("@example.test", [srv.user])
    page = logged_in(srv).get("/compose")
    assert "<option selected>alice@example.test</option>" in page.text
    assert "<option>info@example.test</option>" in page.text
    assert "@example.test</option>" not in page.text.replace("alice@", "").replace("info@", "")


def test_a_rich_text_draft_resumes_in_the_editor(srv: RunningServer) -> None:
    browser = logged_in(srv)
    fields = form_of(browser.get("/compose"), subject="Rich", html="<p><i>soon</i></p>")
    saved = post_form(browser, "/compose/draft", fields)
    [(_, _, raw)] = imap_messages(srv, "Drafts")
    assert b"multipart/alternative" in raw
    resumed = browser.get(f"/compose?draft={quote(field(saved, 'draft'))}")
    assert re.search(r'id="editor"[^>]*>\s*<p><i>soon</i></p>', resumed.text)
    assert textarea(resumed).strip() == "soon"


def streamed_upload(browser: Browser, token: str, path: Path) -> int:
    """Upload ``path`` with its body streamed from the file (the client holds 8 KiB at a
    time); the response status."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", browser.port, context=client_tls(), timeout=60
    )
    cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    headers = {
        "Cookie": cookies,
        "X-CSRF-Token": token,
        "X-Filename": "big.bin",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(path.stat().st_size),
    }
    try:
        with open(path, "rb") as body:
            connection.request("POST", "/compose/upload", body, headers)
            return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize(("megabytes", "status"), [(20, 200), (60, 413)])
def test_memory_stays_bounded_for_large_uploads(
    srv: RunningServer, tmp_path: Path, megabytes: int, status: int
) -> None:
    # 20 MB is taken (the default limit is 50 MB: 37.5 MB of attachments), 60 MB refused.
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(b"\xab" * (1024 * 1024))
    browser = logged_in(srv)
    token = browser.get("/compose").csrf()
    tracemalloc.start()
    try:
        assert streamed_upload(browser, token, path) == status
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak  # the server and the client together
    kept = list(upload_root(srv).rglob("*.json"))
    assert len(kept) == (1 if status == 200 else 0)
