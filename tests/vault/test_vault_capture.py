"""Capture over every way in (MX, LMTP, submission, APPEND into Sent) with real clients; user
deletions leave the vault alone; a vault that cannot write refuses the mail; ``vault status``."""

from __future__ import annotations

import contextlib
import imaplib
import io
import json
import os
import smtplib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import PASSWORD, RunningServer, client_tls, running_server
from pop3help import pop

from ourmail.admin import cli
from ourmail.config import Pop3Settings
from ourmail.interfaces import VaultQuery
from ourmail.vault.index import SQLiteIndex
from ourmail.vault.records import Record
from ourmail.vault.segments import SegmentLog

T = TypeVar("T")
BOB, CAROL = "bob@example.test", "carol@example.test"


def vault_records(srv: RunningServer) -> list[Record]:
    return [record for _, record in SegmentLog(srv.data / "vault").records()]


def captures(srv: RunningServer) -> list[dict[str, Any]]:
    return [r.fields for r in vault_records(srv) if r.fields["kind"] == "capture"]


def message(subject: str, body: bytes = b"the same body\r\n", to: str = BOB) -> bytes:
    return f"From: alice@example.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n".encode() + body


def imap(srv: RunningServer) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
    m.login(srv.user, srv.password)
    return m


def wait_for(get: Callable[[], T], done: Callable[[T], bool]) -> T:
    for _ in range(200):
        found = get()
        if done(found):
            return found
        time.sleep(0.05)
    raise AssertionError(f"still not there: {found!r}")


def status(srv: RunningServer) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["vault", "status", "--json", "--data", str(srv.data)]) == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def test_every_way_in_is_captured_once_with_its_envelope(tmp_path: Path) -> None:
    policy = Pop3Settings(delete="expunge")
    with running_server(tmp_path, pop3=policy) as srv:
        srv.add_user(BOB)
        srv.add_user(CAROL)
        # MX, three local recipients: one capture, one body.
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.sendmail("x@else.test", [srv.user, BOB, CAROL], message("mx"))
            s.sendmail("y@else.test", [srv.user], message("mx again"))  # same body: dedup
        lmtp = smtplib.LMTP("127.0.0.1", srv.port("lmtp"))
        with lmtp as s:
            s.sendmail("z@else.test", [BOB], message("lmtp", b"another body\r\n"))
        with smtplib.SMTP("127.0.0.1", srv.port("submission")) as s:
            s.starttls(context=client_tls())
            s.login(srv.user, srv.password)
            s.sendmail(srv.user, [CAROL, "far@away.test"], message("sub", b"sent\r\n", CAROL))
        m = imap(srv)
        sent = message("sub", b"sent\r\n", f"{CAROL}, Far <far@away.test>")
        assert m.append("Sent", None, None, sent)[0] == "OK"
        assert m.append("INBOX", None, None, message("not kept", b"x\r\n"))[0] == "OK"
        # The remote copy fails at once (no such domain): its bounce to alice, delivered by
        # the queue, is captured too.
        got = wait_for(lambda: captures(srv), lambda found: len(found) == 6)
        vias = [c["envelope"]["via"] for c in got]
        assert sorted(vias) == ["imap-append", "lmtp", "queue", "smtp", "smtp", "submission"]
        got = [c for c in got if c["envelope"]["via"] != "queue"]
        mx, again, by_lmtp, submitted, appended = (c["envelope"] for c in got)
        assert mx["sender"] == "x@else.test"
        assert mx["recipients"] == [srv.user, BOB, CAROL]
        assert sorted(mx["mailboxes"]) == sorted([srv.user, BOB, CAROL])
        assert mx["client"] == "127.0.0.1" and mx["user"] == "" and mx["id"]
        assert mx["arrival"] > 0
        assert got[0]["body"] == got[1]["body"]
        assert by_lmtp["mailboxes"] == [BOB]
        assert submitted["user"] == srv.user and submitted["mailboxes"] == [CAROL]
        assert submitted["recipients"] == [CAROL, "far@away.test"]
        assert appended["user"] == srv.user
        assert appended["recipients"] == [CAROL, "far@away.test"]
        assert got[3]["body"] == got[4]["body"]  # the Sent copy shares the submission's body
        kinds = [r.fields["kind"] for r in vault_records(srv)]
        assert kinds.count("blob") == 4 and kinds.count("capture") == 6

        # A Sent made without a special use (a plain CREATE, a migration) is still the \Sent
        # that LIST shows, and an APPEND into it is kept.
        c = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
        c.login(CAROL, PASSWORD)
        assert c.delete("Sent")[0] == "OK" and c.create("Sent")[0] == "OK"
        assert c.append("Sent", None, None, message("plain", b"from carol\r\n"))[0] == "OK"
        c.logout()
        plain = wait_for(lambda: captures(srv), lambda found: len(found) == 7)[-1]["envelope"]
        assert (plain["via"], plain["user"]) == ("imap-append", CAROL)

        # Users' deletions leave the vault as it was, byte for byte.
        before = [p.read_bytes() for _, p in SegmentLog(srv.data / "vault").segments()]
        m.select("INBOX")
        m.store("1:*", "+FLAGS", "\\Deleted")
        m.expunge()
        m.logout()
        p = pop(srv, CAROL)
        p.dele(1)
        p.quit()
        after = [p.read_bytes() for _, p in SegmentLog(srv.data / "vault").segments()]
        assert after == before

        report = status(srv)
        assert report["records"] == {"blob": 5, "capture": 7}
        assert report["messages"] == 7 and report["shared_bodies"] == 2
        assert report["head"]["seq"] == 12 and report["first_capture"] <= report["last_capture"]
        (root,) = report["roots"].values()
        assert len(root["segments"]) == 1 and root["free"] > 0
        assert report["stored_octets"] > 0 and report["original_octets"] > 0


def test_a_vault_that_cannot_write_refuses_the_mail(mailserver: RunningServer) -> None:
    srv = mailserver
    segments = srv.data / "vault" / "segments"
    (segments / "00000001.seg").mkdir()  # where the vault would write: cannot be written
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            s.sendmail("x@else.test", [srv.user], message("refused"))
        assert refused.value.smtp_code == 451
        inbox = next((srv.data / "mail").rglob("alice")) / "new"
        assert os.listdir(inbox) == [] and os.listdir(inbox.parent / "tmp") == []
        (segments / "00000001.seg").rmdir()
        s.sendmail("x@else.test", [srv.user], message("accepted"))  # works again
    assert len(os.listdir(inbox)) == 1 and len(captures(srv)) == 1


def test_the_server_indexes_captures_from_a_process_of_its_own(
    mailserver: RunningServer,
) -> None:
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        s.sendmail("x@else.test", [mailserver.user], message("indexed by the follower"))
    seq = captures(mailserver)[-1]["seq"]
    index = SQLiteIndex(mailserver.data / "vault" / "index.sqlite")
    try:
        wait_for(index.last_seq, lambda last: last >= seq)  # nobody here catches it up
        _, hits = index.search(VaultQuery(subject="follower"), 0, 10)
        assert seq in [hit.seq for hit in hits]
    finally:
        index.close()
    service = mailserver.server.service.getServiceNamed("vault-indexer")
    assert service._process.pid is not None  # a process of its own
