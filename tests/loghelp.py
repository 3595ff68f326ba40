"""Log events of a running server, as the tests see them: collected from twisted.logger, and
written out in the two formats an admin gets (twistd's text lines, JSON lines)."""

from __future__ import annotations

import base64
import contextlib
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import RunningServer, client_tls
from twisted.logger import formatEventAsClassicLogText, globalLogPublisher

from ourmail.logs.jsonlog import json_line


class Events:
    """Every log event emitted while it is open (from the reactor's thread)."""

    def __init__(self) -> None:
        self.all: list[dict[str, Any]] = []
        self._lock = threading.Condition()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.all.append(dict(event))
            self._lock.notify_all()

    def of(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        """The events ``event=kind`` whose fields have the given values."""
        with self._lock:
            return [
                e
                for e in self.all
                if e.get("event") == kind and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait(self, kind: str, count: int, **fields: Any) -> list[dict[str, Any]]:
        """Wait (up to 30 s) until ``count`` such events were logged; they are returned."""
        deadline = time.monotonic() + 30
        with self._lock:
            while len(found := self.of(kind, **fields)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(found)} {kind} events, not {count}: {found}")
                self._lock.wait(left)
        return found

    def text(self) -> str:
        """The events as twistd writes them to its log file (text format)."""
        with self._lock:
            return "".join(formatEventAsClassicLogText(e) or "" for e in self.all)

    def json(self) -> str:
        """The events as JSON lines (``[log] format = "json"``)."""
        with self._lock:
            return "".join(json_line(e) for e in self.all)


@contextlib.contextmanager
def captured() -> Iterator[Events]:
    """Collect log events while the block runs."""
    events = Events()
    globalLogPublisher.addObserver(events)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events)


def write_logs(events: Events, folder: Path) -> tuple[Path, Path]:
    """The text and the JSON log files of ``events``."""
    text, js = folder / "twistd.log", folder / "ourmail.json"
    text.write_text(events.text(), "utf-8")
    js.write_text(events.json(), "utf-8")
    return text, js


def _tls(srv: RunningServer, service: str, source: str) -> Any:
    sock = socket.create_connection(("127.0.0.1", srv.port(service)), source_address=(source, 0))
    return client_tls().wrap_socket(sock)


def imap_login(srv: RunningServer, user: str, password: str, source: str) -> bytes:
    """IMAPS LOGIN with quoted strings (a name with any byte but CR, LF, quote, backslash
    as a literal); the tagged reply."""
    with _tls(srv, "imaps", source) as tls:
        f = tls.makefile("rb")
        f.readline()
        raw = user.encode("utf-8")
        tls.sendall(b"a LOGIN {" + str(len(raw)).encode() + b"+}\r\n" + raw)
        tls.sendall(f' "{password}"\r\n'.encode())
        while not (line := f.readline()).startswith(b"a "):
            pass
        tls.sendall(b"z LOGOUT\r\n")
        return line


def pop3_login(srv: RunningServer, user: str, password: str, source: str) -> bytes:
    """POP3S USER/PASS; the reply to PASS."""
    with _tls(srv, "pop3s", source) as tls:
        f = tls.makefile("rb")
        f.readline()
        tls.sendall(f"USER {user}\r\n".encode())
        f.readline()
        tls.sendall(f"PASS {password}\r\n".encode())
        reply = f.readline()
        tls.sendall(b"QUIT\r\n")
        return reply


def smtp_login(srv: RunningServer, user: str, password: str, source: str) -> int:
    """AUTH PLAIN on submissions; the reply code."""
    with smtplib.SMTP_SSL(
        "127.0.0.1", srv.port("submissions"), context=client_tls(), source_address=(source, 0)
    ) as s:
        s.ehlo("client.example")
        plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        code, _ = s.docmd("AUTH", f"PLAIN {plain}")
        return code
