"""A socket-level fuzzer (issue 7 point 3): random and mutated command streams sent to a running
server's SMTP, IMAP and POP3 ports for a bounded time.  No reply may be an internal error, no
traceback may reach the log, and each service still serves a normal session afterwards.

The seed is printed; ``OURMAIL_FUZZ_SEED`` replays a run and ``OURMAIL_FUZZ_SECONDS`` (default
4 per protocol) makes it longer.
"""

from __future__ import annotations

import os
import random
import selectors
import smtplib
import socket
import time
from collections.abc import Iterator

import pytest
from conftest import RunningServer
from twisted.logger import formatEvent, globalLogPublisher

SECONDS = float(os.environ.get("OURMAIL_FUZZ_SECONDS", "4"))
SEED = int(os.environ.get("OURMAIL_FUZZ_SEED", "0")) or random.SystemRandom().randrange(1 << 30)

CORPUS = {
    "smtp": [
        b"EHLO fuzz.test", b"HELO x", b"MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME",
        b"RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y",
        b"DATA", b"Subject: x\r\n\r\nbody\r\n.", b"BDAT 5 LAST", b"RSET", b"NOOP", b"VRFY x",
        b"AUTH PLAIN AGFsaWNlAHg=", b"STARTTLS", b"MAIL FROM:<> RET=HDRS ENVID=a+2Bb",
        b"RCPT TO:<\"q\\\"x\"@example.test>", b"QUIT",
    ],
    "imap": [
        b"a CAPABILITY", b"a LOGIN alice x", b"a SELECT INBOX", b"a FETCH 1:* (FLAGS BODY[])",
        b"a UID SEARCH OR FROM x (NOT SEEN) UID 1:*", b"a APPEND INBOX {5+}\r\nhello",
        b"a LIST \"\" *", b"a STATUS INBOX (MESSAGES)", b"a ID (\"name\" \"x\")", b"a NOOP",
        b"a AUTHENTICATE PLAIN", b"a ENABLE QRESYNC", b"a STARTTLS", b"a IDLE", b"DONE",
        b"a COMPRESS DEFLATE", b"a LOGOUT",
    ],
    "pop3": [
        b"CAPA", b"USER alice", b"PASS x", b"STAT", b"LIST", b"UIDL 1", b"RETR 1", b"TOP 1 5",
        b"DELE 1", b"RSET", b"AUTH PLAIN", b"AUTH PLAIN AGFsaWNlAHg=", b"STLS", b"QUIT",
    ],
}  # fmt: skip
INTERNAL = {"smtp": b"4.3.0 Internal error", "imap": b"SERVERBUG", "pop3": b"Internal error"}
PLAIN_PORT = {"smtp": "smtp", "imap": "imap", "pop3": "pop3"}


def mutate(rng: random.Random, line: bytes) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        pos = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)  # bit flip
        elif choice == 1:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 2:
            del data[pos : pos + rng.randint(1, 8)]
        elif choice == 3:
            data[pos:pos] = rng.choice([b"{", b"}", b"(", b")", b'"', b"\\", b"\x00", b"\r",
                                        b"\n", b"*", b"%", b"<", b">", b"~{99999999999}"])  # fmt: skip
        elif choice == 4:
            data = data * rng.randint(2, 50)
        elif choice == 5:
            data[pos:pos] = b"A" * rng.choice([100, 1000, 10_000, 100_000])
        else:
            data = bytearray(data[:pos])
    return bytes(data)


def stream(rng: random.Random, protocol: str) -> Iterator[bytes]:
    for _ in range(rng.randint(1, 30)):
        kind = rng.random()
        if kind < 0.15:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        elif kind < 0.6:
            yield mutate(rng, rng.choice(CORPUS[protocol])) + b"\r\n"
        else:
            yield rng.choice(CORPUS[protocol]) + b"\r\n"


def drain(sock: socket.socket, seconds: float) -> bytes:
    out = b""
    end = time.monotonic() + seconds
    # A selector, not select.select: that one cannot watch descriptors above 1023.
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        while time.monotonic() < end:
            if not selector.select(max(0.0, end - time.monotonic())):
                break
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.fixture
def tracebacks() -> Iterator[list[str]]:
    found: list[str] = []

    def observe(event: dict) -> None:  # type: ignore[type-arg]
        if event.get("log_failure") is not None or "Traceback" in formatEvent(event):
            found.append(formatEvent(event) + str(event.get("log_failure")))

    globalLogPublisher.addObserver(observe)
    yield found
    globalLogPublisher.removeObserver(observe)


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_fuzzed_streams(mailserver: RunningServer, protocol: str, tracebacks: list[str]) -> None:
    rng = random.Random(SEED + hash(protocol) % 1000)
    print(f"fuzz seed {SEED} (OURMAIL_FUZZ_SEED={SEED} replays it)")
    port = mailserver.port(PLAIN_PORT[protocol])
    end = time.monotonic() + SECONDS
    sessions = 0
    while time.monotonic() < end:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            replies = drain(sock, 0.2)
            for chunk in stream(rng, protocol):
                try:
                    sock.sendall(chunk)
                except OSError:
                    break  # the server closed the session (too many errors): allowed
                replies += drain(sock, 0.01)
            replies += drain(sock, 0.3)
        sessions += 1
        assert INTERNAL[protocol] not in replies, (SEED, replies[-500:])
    assert sessions > 3
    assert tracebacks == [], (SEED, tracebacks[:3])
    check_still_serving(mailserver, protocol)


def check_still_serving(srv: RunningServer, protocol: str) -> None:
    if protocol == "smtp":
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            assert s.noop()[0] == 250
        return
    with socket.create_connection(("127.0.0.1", srv.port(PLAIN_PORT[protocol]))) as sock:
        greeting = drain(sock, 2)
        assert greeting.startswith(b"* OK" if protocol == "imap" else b"+OK")
        sock.sendall(b"a NOOP\r\n" if protocol == "imap" else b"CAPA\r\n")
        assert drain(sock, 2).startswith(b"a OK" if protocol == "imap" else b"+OK")
