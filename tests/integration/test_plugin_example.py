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
