"""The message view over HTTPS on a running server, mail delivered over SMTP (issue 16 point
5): plain text, HTML in its sandboxed frame, Greek charsets, inline ``cid:`` images,
attachments, enclosed messages, a message the parser cannot read, remote images per message
and per verified sender, ``\\Seen``, a gone message, a forged form."""

from __future__ import annotations

import base64
import re
import smtplib
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
from conftest import RunningServer, dns_zone, running_server
from imaphelp import Session
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from webhelp import Browser

from ourmail.config import DNSSettings, FilterSettings
from ourmail.web import remoteimages
from ourmail.web.sanitise import frame_csp

SPF = "spfnotes:factory"
#: SPF passes for this domain, which publishes DMARC: its From is verified.
VERIFIED = "verified.test"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    filters = FilterSettings(
        chain=(SPF, "dkim", "dmarc"), options={SPF: {"results": {VERIFIED: "pass"}}}
    )
    dns = DNSSettings(servers=(f"127.0.0.1:{dns_zone()[1]}",))
    dns_zone()[0].set_txt(f"_dmarc.{VERIFIED}", [b"v=DMARC1; p=none"])
    with running_server(tmp_path_factory.mktemp("read"), filters=filters, dns=dns) as server:
        yield server


@pytest.fixture(scope="module")
def browser(srv: RunningServer) -> Browser:
    b = Browser(srv)
    assert b.login(srv.user, srv.password).status == 303
    return b


def send(srv: RunningServer, raw: bytes, sender: str = "bob@else.test") -> int:
    """Deliver over SMTP; the new message's uid in INBOX."""
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail(sender, [srv.user], raw)

    def last() -> int:
        folder = srv.server.store.user(srv.user).folder("INBOX")
        folder.sync()
        return int(folder.uids()[-1])

    return int(blockingCallFromThread(reactor, last))


def page(uid: int, folder: str = "INBOX", **more: str) -> str:
    return "/message?" + urlencode({"folder": folder, "uid": str(uid), **more})


def frames(html: str) -> list[str]:
    return [u.replace("&amp;", "&") for u in re.findall(r'<iframe[^>]* src="([^"]+)"', html)]


def head(subject: str, sender: str = "Bob <bob@else.test>") -> str:
    return (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0200\r\nMessage-ID: <%s@else.test>\r\nMIME-Version: 1.0\r\n"
        % subject.replace(" ", ".")
    )


def html_mail(subject: str, sender: str = "Bob <bob@else.test>") -> bytes:
    html = (
        "<p>Hello <b>there</b></p><script>parent.__pwned=1</script>"
        '<img src="https://tracker.example/open.gif" alt="pixel">'
        '<a href="javascript:alert(1)">x</a>'
    )
    return (
        head(subject, sender) + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
    ).encode()


# -- plain text, \Seen, neighbours ----------------------------------------------------------------


def test_a_plain_message_is_shown_escaped_with_links_and_marked_seen(
    srv: RunningServer, browser: Browser
) -> None:
    first = send(srv, (head("First") + "\r\nfirst\r\n").encode())
    raw = (
        head("Plain <hello>") + "\r\nSee https://example.org/x?a=1&b=2 now.\r\n<b>not bold</b>\r\n"
    )
    uid = send(srv, raw.encode())
    last = send(srv, (head("Last") + "\r\nlast\r\n").encode())
    r = browser.get(page(uid))
    assert r.status == 200, r.text
    assert "Plain &lt;hello&gt;" in r.text
    assert "Bob &lt;bob@else.test&gt;" in r.text
    assert '<a href="https://example.org/x?a=1&amp;b=2" target="_blank"' in r.text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in r.text
    assert "<iframe" not in r.text  # plain text needs no frame
    assert "Nov 30, 2026" in r.text  # the date, in English
    assert (
        page(first).replace("&", "&amp;") in r.text and page(last).replace("&", "&amp;") in r.text
    )
    # The actions: reply/forward links, the delete and spam forms to the list's route.
    ref = quote(f"INBOX:{uid}")
    for kind in ("reply", "all", "forward"):
        assert f'href="/compose?{kind}={ref}"' in r.text
    assert 'action="/mail/action"' in r.text and 'value="delete"' in r.text
    assert 'value="spam"' in r.text
    # IMAP sees the message read.
    imap = Session(srv)
    try:
        imap.ok("SELECT INBOX")
        lines = imap.ok(f"UID FETCH {uid} FLAGS")
        assert any(b"\\Seen" in line for line in lines), lines
        lines = imap.ok(f"UID FETCH {last} FLAGS")
        assert not any(b"\\Seen" in line for line in lines), lines
    finally:
        imap.close()


def test_the_page_speaks_greek_dates(srv: RunningServer, browser: Browser) -> None:
    uid = send(srv, (head("Dated") + "\r\ntext\r\n").encode())
    browser.accept_language = "el"
    try:
        r = browser.get(page(uid))
    finally:
        browser.accept_language = None
    assert r.status == 200
    assert "Νοε 2026" in r.text and "Απάντηση" in r.text


# -- HTML, the frame, remote images -------------------------------------------------------------


def test_html_is_framed_sanitised_with_the_frame_policy(
    srv: RunningServer, browser: Browser
) -> None:
    uid = send(srv, html_mail("Framed"))
    r = browser.get(page(uid))
    assert r.status == 200
    assert "Hello" not in r.text  # the body is only in the frame
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in r.text
    assert 'referrerpolicy="no-referrer"' in r.text
    assert "Remote images are hidden." in r.text
    assert "Always show from" not in r.text  # else.test is not verified
    (url,) = frames(r.text)
    assert "images=1" not in url
    f = browser.get(url)
    assert f.status == 200
    assert f.headers["content-security-policy"] == frame_csp(False)
    assert f.headers["x-frame-options"] == "SAMEORIGIN"
    assert f.headers["x-content-type-options"] == "nosniff"
    assert "<b>there</b>" in f.text
    assert "script" not in f.text and "tracker.example" not in f.text
    assert "javascript:" not in f.text
    # The frame asked again (a reload) is made again, the same.
    again = browser.get(url)
    assert again.status == 200 and "<b>there</b>" in again.text


def test_remote_images_shown_for_one_message(srv: RunningServer, browser: Browser) -> None:
    uid = send(srv, html_mail("Images once"))
    r = browser.get(page(uid, images="1"))
    assert "Remote images are hidden." not in r.text
    (url,) = frames(r.text)
    assert "images=1" in url
    f = browser.get(url)
    assert f.headers["content-security-policy"] == frame_csp(True)
    assert 'src="https://tracker.example/open.gif"' in f.text
    assert "script" not in f.text
    # Only that view: the message opened again hides them.
    assert "Remote images are hidden." in browser.get(page(uid)).text


def test_remote_images_always_from_a_verified_sender(srv: RunningServer, browser: Browser) -> None:
    sender = f"bob@{VERIFIED}"
    uid = send(srv, html_mail("Verified", f"Bob <{sender}>"), sender)
    r = browser.get(page(uid))
    assert f"Always show from {sender}" in r.text
    fields = {"folder": "INBOX", "uid": str(uid)}
    # Forged: no token, or another one.
    assert browser.post("/message/images", fields).status == 403
    assert browser.post("/message/images", {**fields, "csrf": "x" * 43}).status == 403
    done = browser.post("/message/images", {**fields, "csrf": r.csrf()})
    assert done.status == 303 and done.headers["location"] == page(uid)
    web = srv.server.web
    assert web is not None and web.services.preferences is not None
    assert web.services.preferences.get(srv.user, remoteimages.SENDERS_KEY) == [sender]
    shown = browser.get(page(uid))
    assert "Remote images are hidden." not in shown.text
    (url,) = frames(shown.text)
    assert 'src="https://tracker.example/open.gif"' in browser.get(url).text
    # The same From without DMARC passing (sent from elsewhere) is not trusted.
    spoofed = send(srv, html_mail("Spoofed", f"Bob <{sender}>"), "bounce@else.test")
    r = browser.get(page(spoofed))
    assert "Remote images are hidden." in r.text and "Always show from" not in r.text
    (url,) = frames(r.text)
    assert "tracker.example" not in browser.get(url).text
    # Nor can it be chosen for that message.
    refused = browser.post(
        "/message/images", {"folder": "INBOX", "uid": str(spoofed), "csrf": r.csrf()}
    )
    assert refused.status == 400


# -- charsets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "text"),
    [("iso-8859-7", "Άλφα και Ωμέγα"), ("windows-1253", "Άλφα και Ωμέγα")],
)
def test_greek_charsets_end_to_end(
    srv: RunningServer, browser: Browser, charset: str, text: str
) -> None:
    encoded = base64.b64encode("Καλημέρα".encode(charset)).decode()
    subject = f"=?{charset}?B?{encoded}?="
    raw = (
        (
            head(subject)
            + f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        ).encode()
        + text.encode(charset)
        + b"\r\n"
    )
    assert text.encode(charset) != text.encode(
        "iso-8859-7" if charset != "iso-8859-7" else "windows-1253"
    )
    uid = send(srv, raw)
    r = browser.get(page(uid))
    assert "Καλημέρα" in r.text and text in r.text


# -- inline images and attachments ----------------------------------------------------------------


def related_mail(subject: str) -> bytes:
    png = base64.b64encode(PNG).decode()
    return (
        head(subject) + 'Content-Type: multipart/related; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        '<p>Logo: <img src="cid:logo@else.test" alt="logo"></p>\r\n'
        "--B\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-ID: <logo@else.test>\r\n\r\n{png}\r\n--B--\r\n"
    ).encode()


def test_cid_images_load_through_the_frames_grant(srv: RunningServer, browser: Browser) -> None:
    uid = send(srv, related_mail("Inline"))
    (url,) = frames(browser.get(page(uid)).text)
    doc = browser.get(url).text
    m = re.search(r'<img src="(/message/part\?grant=[^"]+)"', doc)
    assert m, doc
    image_url = m.group(1).replace("&amp;", "&")
    # The frame's request carries no cookie (a sandboxed, opaque origin): the grant is enough.
    stranger = Browser(srv)
    img = stranger.get(image_url)
    assert img.status == 200
    assert img.body == PNG
    assert img.headers["content-type"] == "image/png"
    assert img.headers["content-disposition"].startswith("inline;")
    assert img.headers["x-content-type-options"] == "nosniff"
    assert img.headers["cross-origin-resource-policy"] == "cross-origin"
    # A made-up grant, or one for a part that is no image, gives nothing.
    assert stranger.get(re.sub(r"grant=[^&]+", "grant=" + "A" * 22, image_url)).status == 404
    assert stranger.get(image_url.replace("part=2", "part=1")).status == 404


def test_a_grant_ends_with_its_session(srv: RunningServer) -> None:
    uid = send(srv, related_mail("Inline after logout"))
    own = Browser(srv)
    own.login(srv.user, srv.password)
    r = own.get(page(uid))
    (url,) = frames(r.text)
    m = re.search(r'<img src="(/message/part\?grant=[^"]+)"', own.get(url).text)
    assert m
    image_url = m.group(1).replace("&amp;", "&")
    assert Browser(srv).get(image_url).status == 200
    assert own.post("/logout", {"csrf": r.csrf()}).status == 303
    assert Browser(srv).get(image_url).status == 404


def attachment_mail(subject: str, payload: bytes) -> bytes:
    encoded = base64.b64encode("../../etc/παράρτημα.pdf".encode()).decode()
    name = f"=?UTF-8?B?{encoded}?="
    data = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    return (
        head(subject) + 'Content-Type: multipart/mixed; boundary="M"\r\n\r\n'
        "--M\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
        f'--M\r\nContent-Type: application/pdf; name="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="{name}"\r\n\r\n{data}'
        '--M\r\nContent-Type: text/html; name="evil.html"\r\n'
        'Content-Disposition: attachment; filename="evil.html"\r\n\r\n'
        "<script>alert(1)</script>\r\n--M--\r\n"
    ).encode()


def test_attachments_listed_and_downloaded_safely(srv: RunningServer, browser: Browser) -> None:
    payload = bytes(range(256)) * 2000  # 512 KB, every byte value
    uid = send(srv, attachment_mail("Attached", payload))
    r = browser.get(page(uid))
    assert "παράρτημα.pdf" in r.text and "application/pdf" in r.text and "512 KB" in r.text
    assert "evil.html" in r.text
    links = [u.replace("&amp;", "&") for u in re.findall(r'href="(/message/part\?[^"]+)"', r.text)]
    assert len(links) == 2
    pdf = browser.get(links[0])
    assert pdf.status == 200 and pdf.body == payload
    assert pdf.headers["content-type"] == "application/pdf"
    disposition = pdf.headers["content-disposition"]
    assert (
        disposition.startswith("attachment;") and "/" not in disposition and ".." not in disposition
    )
    assert (
        "filename*=UTF-8''%CF%80%CE%B1%CF%81%CE%AC%CF%81%CF%84%CE%B7%CE%BC%CE%B1.pdf" in disposition
    )
    html = browser.get(links[1])
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in html.headers["content-security-policy"]
    # Asked inline, HTML is still an attachment: only raster images are ever inline.
    assert (
        browser.get(links[1] + "&inline=1").headers["content-disposition"].startswith("attachment;")
    )
    # Parts that are not there.
    assert browser.get(page(uid).replace("/message?", "/message/part?") + "&part=9").status == 404
    assert (
        browser.get(page(uid).replace("/message?", "/message/part?") + "&part=../1").status == 404
    )


def test_the_source_is_plain_text(srv: RunningServer, browser: Browser) -> None:
    raw = (head("Source") + "\r\n<script>alert(1)</script>\r\n").encode()
    uid = send(srv, raw)
    r = browser.get(page(uid).replace("/message?", "/message/raw?"))
    assert r.status == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert raw in r.body


# -- enclosed messages, unreadable messages ---------------------------------------------------------


def test_an_enclosed_message_opens_in_place(srv: RunningServer, browser: Browser) -> None:
    inner = (
        head("Inner subject", "Carol <carol@else.test>")
        + "Content-Type: text/html; charset=utf-8\r\n\r\n<p>Inner <i>words</i></p><script>x()</script>\r\n"
    )
    raw = (
        head("Outer") + 'Content-Type: multipart/mixed; boundary="O"\r\n\r\n'
        "--O\r\nContent-Type: text/plain\r\n\r\nForwarding this.\r\n"
        f"--O\r\nContent-Type: message/rfc822\r\n\r\n{inner}--O--\r\n"
    )
    uid = send(srv, raw.encode())
    r = browser.get(page(uid))
    assert "Forwarding this." in r.text
    assert "Inner subject" in r.text and "Carol &lt;carol@else.test&gt;" in r.text
    assert 'class="nested"' in r.text
    assert 'class="body-frame short"' in r.text  # a few words: a low frame
    (url,) = frames(r.text)
    assert "part=2.1" in url
    doc = browser.get(url).text
    assert "Inner <i>words</i>" in doc and "script" not in doc
    eml = [u for u in re.findall(r'href="(/message/part\?[^"]+)"', r.text) if "part=2&" in u + "&"]
    assert eml
    got = browser.get(eml[0].replace("&amp;", "&"))
    assert got.headers["content-type"] == "message/rfc822"
    assert got.headers["content-disposition"] == 'attachment; filename="Inner subject.eml"'
    assert got.body.startswith(b"From: Carol")


def test_a_message_the_parser_cannot_read_is_shown_raw(
    srv: RunningServer, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = send(srv, (head("Broken") + "\r\n<img src=x onerror=alert(1)>\r\n").encode())

    def broken(data: object) -> None:
        raise ValueError("the parser fails")

    from ourmail.mime import structure

    monkeypatch.setattr(structure, "parse", broken)
    r = browser.get(page(uid))
    assert r.status == 200
    assert "as it was received" in r.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in r.text and "<img src=x" not in r.text


def test_garbage_octets_never_give_a_server_error(srv: RunningServer, browser: Browser) -> None:
    raw = b"From: \xff\xfe<>\r\nContent-Type: multipart/mixed; boundary=\r\nSubject: =?bogus?Q?x?=\r\n\r\n--\r\n\x00\x01\xff--\r\n"
    uid = send(srv, raw)
    assert browser.get(page(uid)).status == 200
    assert browser.get(page(uid).replace("/message?", "/message/raw?")).status == 200


def test_a_folder_with_an_odd_name(srv: RunningServer, browser: Browser) -> None:
    name = "Ünï/κόσμος & co"

    def put() -> object:
        user = srv.server.store.user(srv.user)
        user.create_folder(name)
        return user.folder(name).append((head("Odd folder") + "\r\nhere\r\n").encode())

    uid = int(blockingCallFromThread(reactor, put))
    r = browser.get(page(uid, folder=name))
    assert r.status == 200 and "Odd folder" in r.text
    assert urlencode({"folder": name}).replace("&", "&amp;") in r.text  # links keep the folder
    raw = browser.get(page(uid, folder=name).replace("/message?", "/message/raw?"))
    assert b"here" in raw.body


# -- what is not there ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"folder": "INBOX", "uid": "999999"},
        {"folder": "No such folder", "uid": "1"},
        {"folder": "INBOX", "uid": "-1"},
        {"folder": "INBOX", "uid": "x"},
        {"uid": "1"},
    ],
)
def test_a_gone_message_or_folder_is_a_clear_404(browser: Browser, query: dict[str, str]) -> None:
    for route in ("/message", "/message/body", "/message/part", "/message/raw"):
        r = browser.get(f"{route}?{urlencode(query)}&part=1")
        assert r.status == 404, (route, r.status)
        assert "not there" in r.text or "no such" in r.text.lower()


def test_not_logged_in_goes_to_the_login(srv: RunningServer) -> None:
    r = Browser(srv).get(page(1))
    assert r.status == 303 and r.headers["location"] == "/login"
