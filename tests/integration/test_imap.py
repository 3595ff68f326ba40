"""IMAP4rev1 over STARTTLS and implicit TLS, driven by imaplib and by hand."""

import imaplib
import re
import smtplib
import time
from collections.abc import Iterator

import pytest
from conftest import RunningServer, client_tls
from rawclient import RawClient

MSG = (
    b"From: Bob <bob@else.test>\r\nTo: alice@example.test\r\nSubject: Quarterly report\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <r1@else.test>\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nThe numbers are up.\r\n"
    b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n"
)


def deliver(srv: RunningServer, msg: bytes = MSG, rcpt: str | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("bob@else.test", [rcpt or srv.user], msg)


@pytest.fixture
def imap(mailserver: RunningServer) -> Iterator[imaplib.IMAP4]:
    m = imaplib.IMAP4("127.0.0.1", mailserver.port("imap"))
    m.starttls(ssl_context=client_tls())
    m.login(mailserver.user, mailserver.password)
    yield m
    m.logout()


def test_login_needs_tls(mailserver: RunningServer) -> None:
    m = imaplib.IMAP4("127.0.0.1", mailserver.port("imap"))
    assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        m.login(mailserver.user, mailserver.password)
    m.starttls(ssl_context=client_tls())
    assert "AUTH=PLAIN" in m.capabilities and "LOGINDISABLED" not in m.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login(mailserver.user, "wrong")
    assert m.login(mailserver.user, mailserver.password)[0] == "OK"
    m.logout()


def test_imaps_with_authenticate_plain(mailserver: RunningServer) -> None:
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    creds = f"\0{mailserver.user}\0{mailserver.password}".encode()
    assert m.authenticate("PLAIN", lambda _: creds)[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_unqualified_login_uses_the_primary_domain(mailserver: RunningServer) -> None:
    m = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    assert m.login("alice", mailserver.password)[0] == "OK"
    m.logout()


def test_default_folders_and_list(imap: imaplib.IMAP4) -> None:
    typ, data = imap.list()
    names = [re.search(rb'"/" "?([^"]*)"?$', line).group(1) for line in data]
    assert names == [b"INBOX", b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash"]
    assert imap.list('""', "%")[1] == data
    assert imap.list('""', "Dr*")[1] == [b'(\\HasNoChildren \\Drafts) "/" "Drafts"']
    assert imap.list('""', '""')[1] == [b'(\\Noselect) "/" ""']
    assert len(imap.lsub()[1]) == 6  # INBOX and the five standard folders


def test_select_reports_everything_a_client_needs(
    mailserver: RunningServer, imap: imaplib.IMAP4
) -> None:
    deliver(mailserver)
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"1"])
    codes = {
        c: imap.response(c)[1][0]
        for c in (
            "FLAGS",
            "PERMANENTFLAGS",
            "UIDVALIDITY",
            "UIDNEXT",
            "UNSEEN",
            "RECENT",
            "READ-WRITE",
        )
    }
    assert None not in codes.values(), codes
    assert (codes["UIDNEXT"], codes["RECENT"], codes["UNSEEN"]) == (b"2", b"1", b"1")
    assert codes["PERMANENTFLAGS"].endswith(b"\\*)")
    imap.select("INBOX", readonly=True)  # EXAMINE
    assert imap.response("READ-ONLY")[1][0] is not None
    assert imap.response("PERMANENTFLAGS")[1] == [b"()"]
    assert imap.store("1", "+FLAGS", "(\\Seen)")[0] == "NO"


def test_fetch_items(mailserver: RunningServer, imap: imaplib.IMAP4) -> None:
    deliver(mailserver)
    imap.select("INBOX")
    typ, data = imap.fetch("1", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)")
    line = data[0]
    assert b"UID 1 " in line and b"RFC822.SIZE " in line
    assert (
        b'ENVELOPE ("Mon, 02 Nov 2026 10:00:00 +0000" "Quarterly report" (("Bob" NIL "bob" "else.test"))'
        in line
    )
    assert b'BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 19 1' in line
    assert b'("APPLICATION" "PDF" NIL NIL NIL "BASE64" 8 NIL NIL NIL NIL) "MIXED"' in line
    typ, data = imap.fetch(
        "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[1] BODY.PEEK[]<0.8>)"
    )
    assert data[0][1] == b"From: Bob <bob@else.test>\r\nSubject: Quarterly report\r\n\r\n"
    assert data[1][1] == b"The numbers are up."
    assert data[2][0].endswith(b"BODY[]<0> {8}") and data[2][1] == b"Received"
    assert b"\\Seen" not in imap.fetch("1", "FLAGS")[1][0]
    typ, data = imap.fetch("1", "(BODY[2.MIME] RFC822.HEADER)")
    assert data[0][1].startswith(b"Content-Type: application/pdf")
    assert b"\\Seen" in imap.fetch("1", "FLAGS")[1][-1]


def test_fetch_body_is_byte_exact(mailserver: RunningServer, imap: imaplib.IMAP4) -> None:
    odd = (
        b"Subject: odd\r\n\r\n"
        + bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"")
        + b"\r\n"
    )
    deliver(mailserver, odd)
    imap.select("INBOX")
    typ, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
    body = data[0][1]
    assert body.endswith(odd) and body.startswith(b"Received: ")
    size = int(re.search(rb"RFC822.SIZE (\d+)", imap.fetch("1", "RFC822.SIZE")[1][0]).group(1))
    assert size == len(body)


def test_search(mailserver: RunningServer, imap: imaplib.IMAP4) -> None:
    deliver(mailserver)
    deliver(mailserver, b"From: carol@else.test\r\nSubject: lunch?\r\n\r\nPizza today\r\n")
    imap.select("INBOX")
    imap.store("2", "+FLAGS", "(\\Flagged)")
    assert imap.search(None, "FROM", "bob")[1] == [b"1"]
    assert imap.search(None, "SUBJECT", '"quarterly REPORT"')[1] == [b"1"]
    assert imap.search(None, "FLAGGED")[1] == [b"2"]
    assert imap.search(None, "NOT", "FLAGGED")[1] == [b"1"]
    assert imap.search(None, "OR", "FROM", "carol", "BODY", "numbers")[1] == [b"1 2"]
    assert imap.search(None, "BODY", "pizza")[1] == [b"2"]
    sizes = imap.fetch("1:2", "(RFC822.SIZE)")[1]
    small = min(int(line.split()[-1].rstrip(b")")) for line in sizes)  # the lunch note
    assert imap.search(None, "LARGER", str(small))[1] == [b"1"]
    assert imap.search(None, "SENTSINCE", "1-Nov-2026", "SENTBEFORE", "3-Nov-2026")[1] == [b"1"]
    assert imap.search(None, "SINCE", "1-Jan-2000")[1] == [b"1 2"]
    assert imap.search(None, "HEADER", "Message-ID", "r1@else")[1] == [b"1"]
    assert imap.search("UTF-8", "ALL")[1] == [b"1 2"]
    assert imap.uid("SEARCH", "UID", "2:*")[1] == [b"2"]
    with pytest.raises(imaplib.IMAP4.error):
        imap.search(None, "NONSENSE")


def test_store_copy_expunge(mailserver: RunningServer, imap: imaplib.IMAP4) -> None:
    for _ in range(3):
        deliver(mailserver)
    imap.select("INBOX")
    assert imap.store("1:2", "+FLAGS", "(\\Deleted $Work)")[0] == "OK"
    assert imap.copy("2:3", "Archive")[0] == "OK"
    assert imap.status("Archive", "(MESSAGES UNSEEN)")[1] == [b'"Archive" (MESSAGES 2 UNSEEN 2)']
    typ, data = imap.expunge()
    assert data == [b"1", b"1"]  # RFC 3501 §7.4.1 numbering
    assert imap.fetch("1", "UID")[1] == [b"1 (UID 3)"]
    imap.select("Archive")
    assert b"$Work" in imap.fetch("1", "FLAGS")[1][0]
    assert imap.uid("STORE", "1", "FLAGS.SILENT", "(\\Seen)") == ("OK", [None])
    assert imap.close()[0] == "OK"


def test_append_and_status(imap: imaplib.IMAP4) -> None:
    msg = b"Subject: draft\r\n\r\nunfinished\r\n"
    assert imap.append("Drafts", "(\\Draft \\Seen)", '"17-Jul-1996 02:44:25 -0700"', msg)[0] == "OK"
    assert imap.status("Drafts", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)")[0] == "OK"
    imap.select("Drafts")
    typ, data = imap.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert b"\\Draft" in data[0][0] and b'"17-Jul-1996 09:44:25 +0000"' in data[0][0]
    assert data[0][1] == msg
    typ, data = imap.append("Nope", None, None, msg)
    assert typ == "NO"


def test_folder_commands(imap: imaplib.IMAP4) -> None:
    assert imap.create("Projects/&AMY-r&APg-")[0] == "OK"  # Projects/Ærø
    assert imap.list('""', "Projects/*")[1] == [b'(\\HasNoChildren) "/" "Projects/&AMY-r&APg-"']
    assert imap.create("Projects")[0] == "NO"
    assert imap.rename("Projects", "Work")[0] == "OK"
    assert imap.subscribe("Work")[0] == "OK"
    assert imap.unsubscribe("Work")[0] == "OK"
    assert imap.delete("Work")[0] == "NO"  # has a child
    assert imap.delete("Work/&AMY-r&APg-")[0] == "OK"
    assert imap.delete("Work")[0] == "OK"
    assert imap.delete("INBOX")[0] == "NO"
    assert imap.select("Work")[0] == "NO"
    for name in ("../x", "a.b", '".."', "x/../../y", "/abs"):
        assert imap.create(name)[0] == "NO"


def test_new_mail_reaches_a_selected_session(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("imaps"), tls=True)
    c.line()
    c.send(f'a LOGIN {mailserver.user} "{mailserver.password}"\r\n'.encode())
    c.until(b"a OK")
    c.send(b"b SELECT INBOX\r\n")
    c.until(b"b OK")
    deliver(mailserver)
    c.send(b"c NOOP\r\n")
    lines = c.until(b"c OK")
    assert b"* 1 EXISTS" in lines
    c.send(b"d IDLE\r\n")
    assert c.line() == b"+ idling"
    started = time.monotonic()
    deliver(mailserver)
    assert c.line() == b"* 2 EXISTS"
    assert time.monotonic() - started < 2
    c.send(b"DONE\r\n")
    assert c.until(b"d ")[-1] == b"d OK IDLE terminated"


def test_flag_changes_and_expunges_reach_other_sessions(mailserver: RunningServer) -> None:
    deliver(mailserver)
    deliver(mailserver)
    a = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    b = imaplib.IMAP4_SSL("127.0.0.1", mailserver.port("imaps"), ssl_context=client_tls())
    for m in (a, b):
        m.login(mailserver.user, mailserver.password)
        m.select("INBOX")
    a.store("1", "+FLAGS", "(\\Deleted)")
    b.noop()
    assert any(b"FLAGS (\\Deleted" in x for x in b.untagged_responses.get("FETCH", []))
    a.expunge()
    b.fetch("1", "UID")  # no EXPUNGE during FETCH
    assert "EXPUNGE" not in b.untagged_responses
    b.noop()
    assert b.untagged_responses["EXPUNGE"] == [b"1"]
    a.logout()
    b.logout()


def test_literals_and_bad_input(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("imaps"), tls=True)
    c.line()
    c.send(b"a LOGIN {%d}\r\n" % len(mailserver.user))
    assert c.line().startswith(b"+ ")
    c.send(
        mailserver.user.encode()
        + b" {%d+}\r\n" % len(mailserver.password)
        + mailserver.password.encode()
        + b"\r\n"
    )
    assert c.until(b"a ")[-1].startswith(b"a OK")
    c.send(b"b APPEND INBOX {4294967295}\r\n")
    assert c.line().startswith(b"b NO [TOOBIG]")
    c.send(b"c LOGIN {99999999}\r\n")
    assert c.line().startswith(b"c NO [TOOBIG]")
    c.send(b"d FROB\r\n")
    assert c.line() == b"d BAD Unknown command"
    c.send(b"e FETCH 1 FLAGS\r\n")
    assert c.line().startswith(b"e BAD FETCH is not allowed")
    c.send(b"f SELECT\r\n")
    assert c.line().startswith(b"f BAD")
    c.send(b"x" * 100_000 + b"\r\n")
    assert c.line() == b"* BAD Command line too long"
    c.send(b'g LIST "unterminated\r\n')
    assert c.line().startswith(b"g BAD")
    c.send(b"+bad-tag NOOP\r\n")
    assert c.line() == b"* BAD Invalid tag"
    c.send(b"h SELECT INBOX\r\n")
    c.until(b"h OK")
    c.send(b"i FETCH 1:* (BODY[999.MIME] FOO)\r\n")
    assert c.line().startswith(b"i BAD")
    c.send(b"j STORE 5 +FLAGS (\\Bogus)\r\n")
    assert c.line().startswith(b"j BAD")
    c.send(b"k NOOP\r\n")
    assert c.line() == b"k OK NOOP completed"


def test_starttls_discards_pipelined_plaintext(mailserver: RunningServer) -> None:
    c = RawClient(mailserver.port("imap"))
    c.line()
    c.send(b"a STARTTLS\r\nb LOGIN alice x\r\n")
    assert c.line() == b"a OK Begin TLS negotiation now"
    c.buf = b""
    c.starttls()
    c.send(b"c NOOP\r\n")
    assert c.line() == b"c OK NOOP completed"  # "b" was never executed


def test_search_and_fetch_metadata_never_read_message_files(
    mailserver: RunningServer, imap: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ourmail.store import folder as folder_mod

    deliver(mailserver)
    deliver(mailserver, b"From: carol@else.test\r\nSubject: lunch?\r\n\r\nPizza\r\n")
    imap.select("INBOX")
    reads = []
    monkeypatch.setattr(folder_mod.StoredMessage, "read", lambda self: reads.append(1) or b"")
    assert imap.search(None, "FROM", "carol", "SUBJECT", "lunch", "UNSEEN", "SMALLER", "500")[
        1
    ] == [b"2"]
    assert imap.search(
        None, "SENTSINCE", "1-Nov-2026", "SINCE", "1-Jan-2000", "HEADER", "Message-ID", "r1"
    )[1] == [b"1"]
    imap.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY)")
    imap.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)")
    imap.select("INBOX")
    assert reads == []
