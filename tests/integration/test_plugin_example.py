"""docs/examples/welcome_realm.py works as the plugin guide says."""

import imaplib
import importlib.util
import sys
from pathlib import Path

from conftest import _ensure_reactor, client_tls
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "welcome_realm.py"


def test_welcome_realm_example(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("welcome_realm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["welcome_realm"] = module
    spec.loader.exec_module(module)
    _ensure_reactor()
    server = blockingCallFromThread(reactor, module.make_server, tmp_path, 0)
    blockingCallFromThread(reactor, server.service.startService)
    try:
        port = server.listeners["imap"].port.getHost().port
        m = imaplib.IMAP4("127.0.0.1", port)
        m.starttls(ssl_context=client_tls())
        m.login("alice", "wonderland")
        assert m.select("INBOX") == ("OK", [b"1"])
        subject = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1]
        assert subject == b"Subject: Welcome, alice!\r\n\r\n"
        assert m.append("Drafts", None, None, b"Subject: kept in memory\r\n\r\nx\r\n")[0] == "OK"
        assert m.status("Drafts", "(MESSAGES)")[1] == [b'"Drafts" (MESSAGES 1)']
        m.logout()
    finally:
        blockingCallFromThread(reactor, server.service.stopService)


def test_subject_check_example(tmp_path: Path) -> None:
    """docs/examples/subject_check.py, named in the chain as the plugin guide says."""
    import smtplib

    from conftest import running_server

    from ourmail.config import FilterSettings

    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        name = "subject_check:factory"
        filters = FilterSettings(chain=(name,), options={name: {"words": ["lottery"]}})
        with running_server(tmp_path, filters=filters) as srv:
            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
                for subject in ("You won the LOTTERY", "Minutes"):
                    body = f"From: a@b.test\r\nSubject: {subject}\r\n\r\nx\r\n"
                    s.sendmail("a@b.test", [srv.user], body.encode())
            root = srv.server.store.shards.user_dir(srv.user)
            (junk,) = (root / ".Junk" / "new").iterdir()
            (kept,) = (root / "new").iterdir()
            assert b'x-subject=fail reason="subject names lottery"' in junk.read_bytes()
            assert b"Authentication-Results: mail.example.test; x-subject=pass" in kept.read_bytes()
    finally:
        sys.path.remove(str(EXAMPLE.parent))
