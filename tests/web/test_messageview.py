"""The message view (ourmail/web/messageview.py) over a corpus shaped like real mail:
Thunderbird, Outlook, Apple Mail and Gmail messages, Greek in every common charset, hostile
names, enclosed messages, and broken or huge MIME."""

from __future__ import annotations

import base64
import mmap
import os
import tempfile
import tracemalloc

import pytest
from storehelp import on_reactor

from ourmail.mime import structure
from ourmail.web import messageview
from ourmail.web.attachments import open_part
from ourmail.web.messageview import Limits, Mailbox, MessageView, UnsafeHTML, build_view


def crlf(text: bytes) -> bytes:
    return structure.to_crlf(text)


def view(text: bytes, **limits: object) -> MessageView:
    return build_view(crlf(text), Limits(**limits) if limits else None)  # type: ignore[arg-type]


THUNDERBIRD = b"""\
Message-ID: <0f3c@example.gr>
Date: Tue, 3 Nov 2026 09:14:02 +0200
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
From: =?UTF-8?B?zpzOsc+Bzq/OsSDOoM6xz4DOsc60zr/PgM6/z43Ou86/z4U=?= <maria@example.gr>
To: Nikos <nikos@example.gr>, "Kostas, IT" <it@example.gr>
Cc: =?UTF-8?Q?=CE=93=CF=81=CE=B1=CE=BC=CE=BC=CE=B1=CF=84=CE=B5=CE=AF=CE=B1?= <grammateia@example.gr>
Subject: =?UTF-8?Q?Re=3a_=ce=a0=cf=81=cf=8c=cf=83=ce=ba=ce=bb=ce=b7=cf=83=ce=b7?=
Content-Type: multipart/mixed; boundary="------------tb0123"
Content-Language: el

This is a multi-part message in MIME format.
--------------tb0123
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 8bit

\xce\x9a\xce\xb1\xce\xbb\xce\xb7\xce\xbc\xce\xad\xcf\x81\xce\xb1,\x20
\xcf\x83\xce\xb1\xcf\x82 \xcf\x83\xcf\x84\xce\xad\xce\xbb\xce\xbd\xcf\x89 \xcf\x84\xce\xbf \xce\xad\xce\xb3\xce\xb3\xcf\x81\xce\xb1\xcf\x86\xce\xbf.

--------------tb0123
Content-Type: application/pdf;
 name="=?UTF-8?B?zqDPgc+Mz4POus67zrfPg863LnBkZg==?="
Content-Disposition: attachment;
 filename*0*=UTF-8''%CE%A0%CF%81%CF%8C%CF%83%CE%BA%CE%BB%CE%B7%CF%83;
 filename*1*=%CE%B7%20%CF%84%CE%B5%CE%BB%CE%B9%CE%BA%CE%AE.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg==

--------------tb0123--
"""


def test_thunderbird_headers_body_and_rfc2231_name() -> None:
    v = view(THUNDERBIRD)
    h = v.headers
    assert h.subject == "Re: Πρόσκληση"
    assert h.from_ == (Mailbox("Μαρία Παπαδοπούλου", "maria@example.gr"),)
    assert h.to == (Mailbox("Nikos", "nikos@example.gr"), Mailbox("Kostas, IT", "it@example.gr"))
    assert h.cc == (Mailbox("Γραμματεία", "grammateia@example.gr"),)
    assert h.date is not None and h.date.isoformat() == "2026-11-03T09:14:02+02:00"
    assert h.message_id == "<0f3c@example.gr>"
    [body] = v.bodies
    assert body.kind == "plain" and body.flowed and not body.delsp and body.section == "1"
    assert body.text.startswith("Καλημέρα, \nσας στέλνω το έγγραφο.")
    [att] = v.attachments
    assert (att.section, att.filename, att.content_type) == (
        "2",
        "Πρόσκληση τελική.pdf",
        "application/pdf",
    )
    assert att.size == len(
        base64.b64decode(
            b"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg=="
        )
    )
    assert not v.truncated and v.raw is None


OUTLOOK = b"""\
From: =?windows-1253?B?wuHz3+vn8iDK/O307/I=?= <v.kontos@dimos.gr>
To: "info@dimos.gr" <info@dimos.gr>
Subject: =?windows-1253?Q?=C1=ED=E1=EA=EF=DF=ED=F9=F3=E7_=F3=F5=ED=DD=E4=F1=E9=E1=F3=E7=F2?=
Date: Wed, 4 Nov 2026 08:00:00 +0000
Message-ID: <AM0PR01MB1234@eurprd01.prod.outlook.com>
Content-Type: multipart/mixed;
\tboundary="_004_AM0PR01MB_"
MIME-Version: 1.0

--_004_AM0PR01MB_
Content-Type: multipart/related;
\tboundary="_003_AM0PR01MB_";
\ttype="multipart/alternative"

--_003_AM0PR01MB_
Content-Type: multipart/alternative;
\tboundary="_000_AM0PR01MB_"

--_000_AM0PR01MB_
Content-Type: text/plain; charset="windows-1253"
Content-Transfer-Encoding: quoted-printable

=C1=E3=E1=F0=E7=F4=DD =F3=F5=ED=DC=E4=E5=EB=F6=E5,

--_000_AM0PR01MB_
Content-Type: text/html; charset="windows-1253"
Content-Transfer-Encoding: quoted-printable

<html><body><p>=C1=E3=E1=F0=E7=F4=DD =F3=F5=ED=DC=E4=E5=EB=F6=E5,</p><img src=3D"cid:ima=
ge001.png@01DB2E8A.5B1C2D30"></body></html>

--_000_AM0PR01MB_--

--_003_AM0PR01MB_
Content-Type: image/png; name="image001.png"
Content-Description: image001.png
Content-Disposition: inline; filename="image001.png"; size=68
Content-ID: <image001.png@01DB2E8A.5B1C2D30>
Content-Transfer-Encoding: base64

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==

--_003_AM0PR01MB_--

--_004_AM0PR01MB_
Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document;
\tname="=?windows-1253?B?0PH88+rr5/PnLmRvY3g=?="
Content-Disposition: attachment;
\tfilename="=?windows-1253?B?0PH88+rr5/PnLmRvY3g=?="; size=12
Content-Transfer-Encoding: base64

UEsDBBQABgAI

--_004_AM0PR01MB_--
"""


def test_outlook_related_html_cid_and_rfc2047_quoted_name() -> None:
    v = view(OUTLOOK)
    assert v.headers.subject == "Ανακοίνωση συνέδριασης"
    assert v.headers.from_ == (Mailbox("Βασίλης Κόντος", "v.kontos@dimos.gr"),)
    assert v.headers.to == (Mailbox("info@dimos.gr", "info@dimos.gr"),)
    [body] = v.bodies
    assert body.kind == "html" and body.section == "1.1.2" and body.text == ""
    assert isinstance(body.html, UnsafeHTML)
    assert "<p>Αγαπητέ συνάδελφε,</p>" in body.html.source
    assert 'src="cid:image001.png@01DB2E8A.5B1C2D30"' in body.html.source
    assert body.charset == "cp1253"
    image, doc = v.attachments
    assert (image.section, image.filename, image.inline) == ("1.2", "image001.png", True)
    assert image.content_id == "image001.png@01DB2E8A.5B1C2D30"
    assert image.size == 70
    assert v.cid_section("cid:image001.png@01DB2E8A.5B1C2D30") == "1.2"
    assert v.cid_section("CID:image001.png%4001DB2E8A.5B1C2D30") == "1.2"
    assert v.cid_section("cid:nothing") is None and v.cid_section("http://x/") is None
    assert (doc.section, doc.filename, doc.inline, doc.size) == ("2", "Πρόσκληση.docx", False, 9)


def test_html_is_never_markup_safe() -> None:
    # Jinja2 trusts objects with __html__: the unsanitised body must not have one.
    assert not hasattr(UnsafeHTML("<script>"), "__html__")


APPLE = b"""\
From: Eleni <eleni@example.gr>
To: nikos@example.gr
Subject: Photos
Date: Thu, 5 Nov 2026 18:22:10 +0200
Mime-Version: 1.0 (Mac OS X Mail 16.0)
Content-Type: multipart/mixed; boundary="Apple-Mail=_A1"

--Apple-Mail=_A1
Content-Transfer-Encoding: 7bit
Content-Type: text/plain; charset=us-ascii

Here is the first one:

--Apple-Mail=_A1
Content-Disposition: inline; filename=IMG_0001.jpeg
Content-Type: image/jpeg; x-unix-mode=0644; name="IMG_0001.jpeg"
Content-Transfer-Encoding: base64

/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA==
--Apple-Mail=_A1
Content-Transfer-Encoding: quoted-printable
Content-Type: text/plain; charset=utf-8

and the second =E2=80=94 see you soon.
--Apple-Mail=_A1--
"""


def test_apple_mail_text_image_text() -> None:
    v = view(APPLE)
    assert [b.text.strip() for b in v.bodies] == [
        "Here is the first one:",
        "and the second — see you soon.",
    ]
    [img] = v.attachments
    assert (img.section, img.filename, img.content_type, img.inline) == (
        "2", "IMG_0001.jpeg", "image/jpeg", True,
    )  # fmt: skip


GMAIL = b"""\
MIME-Version: 1.0
Date: Fri, 6 Nov 2026 11:05:31 +0200
Message-ID: <CAF=abc@mail.gmail.com>
Subject: =?UTF-8?B?zqPPhc69zqzOvc+EzrfPg863IM+Ez4fOvyDPgM6xz4HOsc+DzrrOtc+Fzq4=?=
From: =?UTF-8?B?zpPOuc+Oz4HOs86/z4I=?= <giorgos@gmail.com>
To: nikos@example.gr
Content-Type: multipart/alternative; boundary="000000000000e1f2"

--000000000000e1f2
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: base64

zprOsc67zrfOvM6tz4HOsSE=
--000000000000e1f2
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

<div dir=3D"ltr">=CE=9A=CE=B1=CE=BB=CE=B7=CE=BC=CE=AD=CF=81=CE=B1!</div>

--000000000000e1f2--
"""


def test_gmail_alternative_prefers_html() -> None:
    v = view(GMAIL)
    assert v.headers.subject == "Συνάντηση τχο παρασκευή"
    assert v.headers.from_ == (Mailbox("Γιώργος", "giorgos@gmail.com"),)
    [body] = v.bodies
    assert body.kind == "html" and body.section == "2"
    assert body.html == UnsafeHTML('<div dir="ltr">Καλημέρα!</div>\n')
    assert v.attachments == ()  # the text alternative is not offered as a file


def test_alternative_without_html_shows_text() -> None:
    msg = GMAIL.replace(b"text/html", b"application/x-other")
    [body] = view(msg).bodies
    assert body.kind == "plain" and body.text == "Καλημέρα!"


@pytest.mark.parametrize("charset", ["iso-8859-7", "windows-1253"])
def test_greek_single_part_with_raw_8bit_subject(charset: str) -> None:
    greek = "Άδεια Ανάπτυξης Δικτύου"
    msg = (
        b"From: test@example.gr\nSubject: " + greek.encode(charset) + b"\n"
        b"Content-Type: text/plain; charset=" + charset.encode() + b"\n"
        b"Content-Transfer-Encoding: 8bit\n\n" + greek.encode(charset) + b"\n"
    )
    v = view(msg)
    assert v.headers.subject == greek
    assert v.bodies[0].text == greek + "\n"


def test_unlabelled_greek_uses_the_configured_fallback() -> None:
    msg = b"Subject: x\n\n" + "Ψάρι".encode("windows-1253") + b"\n"
    assert view(msg, fallback_charset="windows-1253").bodies[0].text == "Ψάρι\n"


def test_lying_and_unknown_charsets_never_raise() -> None:
    base = b"Content-Type: text/plain; charset=%s\n\n" + "Ψάρι".encode("windows-1253")
    for label in (b"utf-8", b"us-ascii", b"x-klingon", b"utf-7", b'"', b"unicode_escape"):
        text = view(base.replace(b"%s", label), fallback_charset="windows-1253").bodies[0].text
        assert text == "Ψάρι"


def test_html_meta_charset_when_mime_declares_none() -> None:
    msg = b'Content-Type: text/html\n\n<meta charset="iso-8859-7"><p>' + "Ώρα".encode("iso-8859-7")
    assert "Ώρα" in view(msg).bodies[0].html.source  # type: ignore[union-attr]


PATH_TRICKS = [
    (b'filename="../../etc/passwd"', "passwd"),
    (b'filename="C:\\\\boot.ini"', "boot.ini"),
    (b"filename*=UTF-8''..%2F..%2F.ssh%2Fauthorized_keys", "authorized_keys"),
    (b'filename="=?UTF-8?Q?a=0D=0Ab=22c.txt?="', "a bc.txt"),
    (b'filename="\\"quoted\\".txt"', "quoted.txt"),
    (b"filename*0*=iso-8859-7''%C5%E3%E3; filename*1*=%F1%E1%F6%EF.txt", "Εγγραφο.txt"),
]


@pytest.mark.parametrize(("param", "safe"), PATH_TRICKS)
def test_attachment_names_are_made_safe(param: bytes, safe: str) -> None:
    msg = (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nhi\n--b\n"
        b"Content-Type: application/octet-stream\nContent-Disposition: attachment; "
        + param
        + b"\n\nxyz\n--b--\n"
    )
    [att] = view(msg).attachments
    assert att.filename == safe


def test_unnamed_parts_get_a_name_by_type() -> None:
    msg = (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nhi\n--b\n"
        b"Content-Type: application/pdf\n\n%PDF\n--b--\n"
    )
    assert view(msg).attachments[0].filename == "part-2.pdf"


def forwarded(inner: bytes, n: int) -> bytes:
    return (
        b"Subject: Fwd %d\nContent-Type: multipart/mixed; boundary=f%d\n\n--f%d\n\nsee below\n"
        b"--f%d\nContent-Type: message/rfc822\n\n" % (n, n, n, n) + inner + b"\n--f%d--\n" % n
    )


def test_attached_message_is_a_nested_view() -> None:
    v = view(forwarded(GMAIL, 1))
    [att] = v.attachments
    assert att.content_type == "message/rfc822" and att.section == "2"
    assert att.filename.endswith(".eml") and att.filename.startswith("Συνάντηση")
    assert att.message is not None
    assert att.message.headers.from_ == (Mailbox("Γιώργος", "giorgos@gmail.com"),)
    [inner_body] = att.message.bodies
    assert inner_body.section == "2.2" and inner_body.kind == "html"
    # The .eml download is the enclosed message as stored.
    data = crlf(forwarded(GMAIL, 1))
    download = open_part(data, "2")
    assert download is not None and b"".join(download.chunks()) == crlf(GMAIL)


def test_100_deep_nesting_is_bounded() -> None:
    msg = b"Subject: innermost\n\ndeep\n"
    for n in range(100):
        msg = forwarded(msg, n)
    v = view(msg)  # (bench/web_message.py measures the time)
    assert v.headers.subject == "Fwd 99" and v.truncated
    depth, cur = 0, v
    while cur.attachments and cur.attachments[0].message is not None:
        cur, depth = cur.attachments[0].message, depth + 1
    assert depth == Limits().max_nested


def test_100_deep_multiparts_are_bounded() -> None:
    msg = b"leaf\n"
    for n in range(100):
        msg = (
            b"Content-Type: multipart/mixed; boundary=m%d\n\n--m%d\n" % (n, n)
            + msg
            + b"\n--m%d--\n" % n
        )
    v = view(b"Subject: deep\n" + msg)
    assert v.headers.subject == "deep"  # parsed as deep as structure.MAX_DEPTH, then opaque


def test_10000_parts_are_bounded() -> None:
    parts = b"".join(
        b"--b\nContent-Type: application/octet-stream; name=f%d.bin\n\nx\n" % i
        for i in range(10_000)
    )
    msg = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nhello\n" + parts + b"--b--\n"
    v = view(msg)  # (bench/web_message.py measures the time)
    assert v.truncated
    assert v.bodies[0].text == "hello"
    assert len(v.attachments) == Limits().max_attachments


@pytest.mark.parametrize(
    "msg",
    [
        # A boundary that never appears: the body is shown as text.
        b"Content-Type: multipart/mixed; boundary=nothere\n\nJust text\n",
        # No boundary parameter at all.
        b"Content-Type: multipart/mixed\n\nJust text\n",
        # No closing delimiter.
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nJust text\n--b\nContent-Type: text/html\n\n<p>x",
    ],
)
def test_broken_boundaries_still_show_text(msg: bytes) -> None:
    v = view(msg)
    assert v.raw is None and "Just text" in v.bodies[0].text


def test_bad_base64_is_decoded_leniently() -> None:
    msg = b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\nzprOsc67!!!zrfOvM6tz4HOsQ\n"
    assert view(msg).bodies[0].text == "Καλημέρα"


def test_unknown_transfer_encoding_shows_the_octets() -> None:
    msg = b"Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 a\n"
    assert view(msg).bodies[0].text == "begin 644 a\n"


@pytest.mark.parametrize("junk", [b"", b"\x00\xff\xfe" * 100, b"::::\n\n\n", b"\n" * 1000])
def test_junk_never_raises(junk: bytes) -> None:
    view(junk)


def test_a_parser_failure_shows_the_message_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: object) -> object:
        raise RecursionError("parser bug")

    monkeypatch.setattr(messageview.structure, "parse", broken)
    v = build_view(b"Subject: <b>hi</b>\r\n\r\n\xce\xb1")
    assert v.raw == "Subject: <b>hi</b>\r\n\r\nα"  # escaped by the template like any text
    assert v.bodies == () and v.attachments == ()


def test_text_is_cut_at_the_limit() -> None:
    msg = b"Content-Type: text/plain\n\n" + b"a" * 5000
    [body] = view(msg, max_text=1000).bodies
    assert body.truncated and len(body.text) == 1000
    assert view(msg, max_text=1000).truncated


def test_total_text_budget_is_shared() -> None:
    msg = (
        b"Content-Type: multipart/mixed; boundary=b\n\n"
        + b"".join(b"--b\nContent-Disposition: inline\n\n" + b"t" * 100 + b"\n" for _ in range(5))
        + b"--b--\n"
    )
    bodies = view(msg, max_total_text=250).bodies
    assert sum(len(b.text) for b in bodies) <= 250


def ten_megabytes() -> tuple[bytes, bytes]:
    payload = os.urandom(7_500_000)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    msg = crlf(THUNDERBIRD).replace(
        b"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg==\r\n", encoded
    )
    assert len(msg) > 10_000_000
    return msg, payload


def test_a_10mb_message_builds_and_its_attachment_streams_byte_exact() -> None:
    msg, payload = ten_megabytes()
    v = build_view(msg)  # bench/web_message.py measures the time: well under 300 ms
    assert v.attachments[0].size == len(payload)
    download = open_part(msg, "2")
    assert download is not None
    largest = 0
    digest = bytearray()
    for chunk in download.chunks():
        largest = max(largest, len(chunk))
        digest += chunk
    assert bytes(digest) == payload
    assert largest <= 64 * 1024  # bounded pieces, never the whole attachment


def test_quoted_printable_download_matches() -> None:
    msg = crlf(
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b\n"
        b"Content-Type: text/csv; name=a.csv\nContent-Disposition: attachment; filename=a.csv\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n"
        b"=CE=B1;=CE=B2=\n;c\n--b--\n"
    )
    download = open_part(msg, "2")
    assert download is not None
    assert b"".join(download.chunks()) == "α;β;c".encode()  # the last CRLF is the delimiter's
    assert download.disposition(inline=True) == 'attachment; filename="a.csv"'


def test_inline_only_for_raster_images() -> None:
    msg = crlf(
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b\n"
        b"Content-Type: image/svg+xml\nContent-Disposition: inline; filename=a.svg\n\n<svg/>\n"
        b"--b\nContent-Type: image/png\nContent-Disposition: inline; filename=a.png\n\nPNG\n--b--\n"
    )
    svg, png = open_part(msg, "2"), open_part(msg, "3")
    assert svg is not None and png is not None
    assert svg.disposition(inline=True).startswith("attachment;")
    assert png.disposition(inline=True).startswith("inline;")


@pytest.mark.parametrize("section", ["0", "9", "1.5", "x", "", "3.1", "1.2"])
def test_open_part_of_no_such_part(section: str) -> None:
    assert open_part(crlf(THUNDERBIRD), section) is None


def test_open_part_refuses_a_multipart() -> None:
    assert open_part(crlf(OUTLOOK), "1") is None


def mapped(data: bytes) -> mmap.mmap:
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def test_a_10mb_message_from_a_memory_map_costs_little_memory() -> None:
    msg, payload = ten_megabytes()
    buf = mapped(msg)
    tracemalloc.start()
    v = build_view(buf)
    download = open_part(buf, "2")
    assert download is not None
    assert sum(len(c) for c in download.chunks()) == len(payload)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert v.attachments[0].size == len(payload)
    assert peak < 2_000_000  # never a copy of the 10 MB message or its attachment


class StoredMessage:
    """Enough of IStoredMessage for view_of: the store's buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def buffer(self) -> bytes:
        return self.data


def test_view_of_a_stored_message_is_built_off_the_reactor() -> None:
    v = on_reactor(messageview.view_of, StoredMessage(crlf(GMAIL)))
    assert isinstance(v, MessageView) and v.bodies[0].kind == "html"


def test_huge_headers_are_bounded() -> None:
    to = b", ".join(b"u%d@example.gr" % i for i in range(3000))
    msg = b"Subject: " + b"=?UTF-8?B?zrE=?= " * 200_000 + b"\nTo: " + to + b"\n\nhi\n"
    v = view(msg, max_header=1_000_000)
    assert v.headers.subject.startswith("ααα")
    assert len(v.headers.to) == 1000 and v.truncated
    assert len(view(msg).headers.subject) < 16 * 1024


def test_a_nested_multipart_without_delimiters_is_an_attachment_that_downloads() -> None:
    msg = crlf(
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nhi\n--b\n"
        b"Content-Type: multipart/signed; boundary=lost\n\nopaque\n--b--\n"
    )
    [att] = build_view(msg).attachments
    assert (att.section, att.content_type) == ("2", "multipart/signed")
    download = open_part(msg, "2")
    assert download is not None and b"".join(download.chunks()) == b"opaque"
