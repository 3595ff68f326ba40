"""FETCH (RFC 3501 §6.4.5, §7.4.2), with the RFC's example, the macros, sections and partials."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session

MIXED = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\nFrom: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\nTo: imap@cac.washington.edu\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="xx"\r\n\r\n'
    b"--xx\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nline one\r\nline two\r\n"
    b"--xx\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n"
    b"--xx--\r\n"
)


def _mailbox(s: Session, count: int = 4) -> None:
    for n in range(count):
        s.append("INBOX", MIXED.replace(b"mtg summary", b"mtg %d" % n))
    s.ok("SELECT INBOX")


def test_fetch_as_in_rfc_3501(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    _mailbox(s)
    # C: A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])
    # S: * 2 FETCH .... / * 3 FETCH .... / * 4 FETCH .... / A654 OK FETCH completed
    lines = s.ok("FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
    heads = [x for x in lines if x.startswith(b"* ")]
    assert [x.split()[1] for x in heads] == [b"2", b"3", b"4"]
    assert all(b"BODY[HEADER.FIELDS (DATE FROM)] {" in x for x in heads)
    assert b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" in lines
    assert not any(x.startswith(b"Subject:") for x in lines)
    assert any(b"\\Seen" in x for x in heads)  # BODY[...] sets \Seen (§6.4.5)
    s.close()


def test_macros_and_metadata(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    _mailbox(s, 1)
    fast = s.ok("FETCH 1 FAST")[0]
    assert b"FLAGS (" in fast and b"INTERNALDATE " in fast and b"RFC822.SIZE " in fast
    assert b"ENVELOPE (" in s.ok("FETCH 1 ALL")[0]
    full = s.ok("FETCH 1 FULL")[0]
    assert b"BODY ((" in full and b'"MIXED")' in full
    bs = s.ok("FETCH 1 BODYSTRUCTURE")[0]
    assert b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 18 2' in bs
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT"' in bs
    env = s.ok("FETCH 1 ENVELOPE")[0]
    assert b'(("Terry Gray" NIL "gray" "cac.washington.edu"))' in env
    assert s.ok("FETCH 1 UID")[0] == b"* 1 FETCH (UID 1)"
    s.close()


def test_sections_and_partials(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    _mailbox(s, 1)
    cases = {
        "BODY.PEEK[1]": [b"line one", b"line two"],
        "BODY.PEEK[1.MIME]": [b"Content-Type: text/plain; charset=us-ascii", b""],
        "BODY.PEEK[2.HEADER]": [b"Subject: inner", b""],
        "BODY.PEEK[2.TEXT]": [b"inner body"],
        "BODY.PEEK[2.1]": [b"inner body"],
        "BODY.PEEK[]<0.4>": [b"* 1 FETCH (BODY[]<0> {4}", b"Date)"],
        "BODY.PEEK[HEADER.FIELDS.NOT (DATE FROM TO MESSAGE-ID MIME-VERSION CONTENT-TYPE)]": [
            b"Subject: IMAP4rev1 WG mtg 0 and minutes"
        ],
    }
    for item, wanted in cases.items():
        lines = s.ok(f"FETCH 1 ({item})")
        for w in wanted:
            assert w in lines or any(w in x for x in lines), (item, lines)
    assert b"\\Seen" not in s.ok("FETCH 1 FLAGS")[0]  # .PEEK sets nothing
    assert s.ok("FETCH 1 (BODY.PEEK[9])")[0].endswith(b"BODY[9] {0}")  # no such part: empty
    s.close()


def test_fetch_errors(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    _mailbox(s, 1)
    for bad in ("FETCH 2 FLAGS", "FETCH 0 FLAGS", "FETCH 1 BOGUS", "FETCH 1 (BODY[1.X])",
                "FETCH 1 (BODY[MIME])", "FETCH 1", "FETCH x FLAGS", "FETCH 1 (BODY[HEADER.FIELDS])"):  # fmt: skip
        assert b" BAD " in s.cmd(bad)[-1], bad
    s.close()
