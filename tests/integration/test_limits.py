"""Every connection limit answers with its protocol's code (RFC 5321, RFC 5530, RFC 3206)."""

import time
from pathlib import Path

import pytest
from conftest import RunningServer, running_server
from rawclient import RawClient

from ourmail.config import Limits
from ourmail.smtp.server import SMTPServer


def greet(srv: RunningServer, service: str = "smtp") -> RawClient:
    c = RawClient(srv.port(service))
    return c


def test_recipients_per_message(tmp_path: Path) -> None:
    with running_server(tmp_path, limits=Limits(max_recipients=2)) as srv:
        c = greet(srv)
        c.line()
        c.send(b"HELO c\r\nMAIL FROM:<a@else.test>\r\n" + b"RCPT TO:<alice@example.test>\r\n" * 3)
        assert c.line().startswith(b"250") and c.line().startswith(b"250")
        # The same recipient three times counts once.
        assert [c.line()[:9] for _ in range(3)] == [b"250 2.1.5"] * 3
        srv.add_user("bob@example.test")
        c.send(b"RCPT TO:<postmaster@example.test>\r\nRCPT TO:<bob@example.test>\r\n")
        assert c.line().startswith(b"250 2.1.5")
        assert c.line().startswith(b"452 4.5.3")  # RFC 5321 §4.5.3.1.10


def test_connections_per_address_and_in_all(tmp_path: Path) -> None:
    with running_server(
        tmp_path, limits=Limits(max_connections_per_ip=2, max_connections=3)
    ) as srv:
        first, second = greet(srv), greet(srv)
        assert first.line().startswith(b"220") and second.line().startswith(b"220")
        third = greet(srv)
        assert third.line().startswith(
            b"421 4.7.0 mail.example.test too many connections from your address"
        )
        assert third.closed()
        first.send(b"QUIT\r\n")
        assert first.line().startswith(b"221") and first.closed()
        time.sleep(0.2)
        again = greet(srv)
        assert again.line().startswith(b"220")  # a slot was given back
        imap = [greet(srv, "imap") for _ in range(2)]
        assert all(c.line().startswith(b"* OK") for c in imap)
        over = greet(srv, "imap")
        assert over.line().startswith(b"* BYE [UNAVAILABLE] too many connections")
        pops = [greet(srv, "pop3") for _ in range(2)]
        assert all(c.line().startswith(b"+OK") for c in pops)
        assert greet(srv, "pop3").line().startswith(b"-ERR [SYS/TEMP] too many connections")


def test_commands_per_connection(tmp_path: Path) -> None:
    with running_server(tmp_path, limits=Limits(max_commands=5)) as srv:
        c = greet(srv)
        c.line()
        c.send(b"NOOP\r\n" * 6)
        assert [c.line()[:3] for _ in range(5)] == [b"250"] * 5
        assert c.line().startswith(b"421 4.7.0 Too many commands")
        assert c.closed()


def test_idle_timeout(mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SMTPServer, "idle_timeout", 1)
    c = greet(mailserver)
    c.line()
    assert c.line().startswith(b"421 4.4.2 Idle timeout")  # RFC 3463 X.4.2: connection dropped
    assert c.closed()


def test_data_timeout(tmp_path: Path) -> None:
    with running_server(tmp_path, limits=Limits(data_timeout=1)) as srv:
        c = greet(srv)
        c.line()
        c.send(b"HELO c\r\nMAIL FROM:<a@else.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        c.until(b"354")
        c.send(b"Subject: slow\r\n\r\nthis never ends")
        assert c.line().startswith(b"421 4.4.2")
        assert c.closed()
        folder = srv.server.store.user(srv.user).folder("INBOX")
        folder.sync()
        assert list(folder.uids()) == []
        spool = srv.data / "spool" / "incoming"
        assert not spool.exists() or list(spool.iterdir()) == []
