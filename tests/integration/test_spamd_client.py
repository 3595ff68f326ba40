"""The spamd client (SPAMC/SPAMD 1.5) against a real spamd, and against loopback servers that
answer garbage, too much, or nothing: always a clear error within the time-out."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest
from conftest import _ensure_reactor
from peers.spamd import GTUBE, Spamd, spamd  # noqa: F401 (a fixture)
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import blockingCallFromThread

from ourmail.filters.spamc import (
    SpamdClient,
    SpamdError,
    SpamdLearner,
    SpamdTimeout,
    parse_reply,
)
from ourmail.interfaces import ISpamLearner


def message(body: bytes, subject: str = "hello") -> bytes:
    return (
        b"From: Sender <sender@example.org>\r\nTo: alice@example.test\r\n"
        + f"Date: {formatdate()}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{uuid.uuid4()}@example.org>\r\n".encode()
        + b"\r\n"
        + body
        + b"\r\n"
    )


def call(f: Callable[..., Any], *args: Any) -> Any:
    _ensure_reactor()
    return blockingCallFromThread(reactor, f, *args)


def client(address: str, **kw: Any) -> SpamdClient:
    return SpamdClient(reactor, address, **kw)


def test_gtube_is_spam(spamd: Spamd) -> None:  # noqa: F811
    score = call(client(spamd.address).symbols, message(GTUBE), "alice@example.test")
    assert score.spam and score.score >= 1000 and score.required == 5.0
    assert "GTUBE" in score.symbols


def test_clean_message_is_not_spam(spamd: Spamd) -> None:  # noqa: F811
    text = b"Hi Alice,\r\n\r\nthe minutes of Tuesday's meeting are attached.\r\n\r\nBob"
    score = call(client(spamd.address).symbols, message(text), "alice@example.test")
    assert not score.spam and score.score < 5.0 and "GTUBE" not in score.symbols


def test_learning_through_tell_reaches_bayes(spamd: Spamd) -> None:  # noqa: F811
    learner = SpamdLearner(client(spamd.address))
    assert ISpamLearner.providedBy(learner)
    before = spamd.magic()
    spam = message(f"Cheap pills {uuid.uuid4()} buy now viagra casino".encode(), "offer")
    ham = message(f"Agenda for the council meeting {uuid.uuid4()}".encode(), "agenda")
    call(learner.learn, "alice@example.test", spam, True)
    call(learner.learn, "alice@example.test", ham, False)
    after = spamd.magic()
    assert after["nspam"] == before.get("nspam", 0) + 1
    assert after["nham"] == before.get("nham", 0) + 1
    # Told again: spamd has already learned it, which is no failure (learned once).
    assert call(client(spamd.address).tell, spam, "alice@example.test", True) is False
    assert spamd.magic()["nspam"] == after["nspam"]


class _Scripted(Protocol):
    def __init__(self, answer: bytes | None, repeat: int) -> None:
        self.answer, self.repeat = answer, repeat

    def dataReceived(self, data: bytes) -> None:
        if self.answer is None or self.transport is None:
            return  # never answers
        for _ in range(self.repeat):
            self.transport.write(self.answer)
        self.transport.loseConnection()
        self.answer = None


@pytest.fixture
def scripted() -> Iterator[Callable[[bytes | None, int], str]]:
    """Starts a loopback server that answers every request with a scripted reply."""
    ports: list[Any] = []

    def start(answer: bytes | None, repeat: int = 1) -> str:
        factory = Factory.forProtocol(lambda: _Scripted(answer, repeat))
        port = call(reactor.listenTCP, 0, factory, 50, "127.0.0.1")
        ports.append(port)
        return f"127.0.0.1:{port.getHost().port}"

    yield start
    for port in ports:
        call(port.stopListening)


def test_garbage_is_a_clear_error(scripted: Callable[..., str]) -> None:
    address = scripted(b"HTTP/1.1 200 OK\r\n\r\nhello")
    with pytest.raises(SpamdError, match="not a spamd reply"):
        call(client(address).symbols, message(b"x"))


def test_missing_spam_field_is_a_clear_error(scripted: Callable[..., str]) -> None:
    address = scripted(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n")
    with pytest.raises(SpamdError, match="no usable Spam"):
        call(client(address).symbols, message(b"x"))


def test_spamd_error_is_a_clear_error(scripted: Callable[..., str]) -> None:
    address = scripted(b"SPAMD/1.0 77 Permission denied: TELL\r\n")
    with pytest.raises(SpamdError, match="77"):
        call(client(address).tell, message(b"x"), "alice@example.test", True)


def test_a_reply_too_long_is_cut_off(scripted: Callable[..., str]) -> None:
    address = scripted(b"SPAMD/1.1 0 EX_OK\r\n" + b"X" * 65536, 64)
    with pytest.raises(SpamdError, match="longer than 4096"):
        call(client(address, max_reply=4096).symbols, message(b"x"))


def test_a_spamd_that_never_answers_times_out(scripted: Callable[..., str]) -> None:
    address = scripted(None)
    started = time.monotonic()
    with pytest.raises(SpamdTimeout):
        call(client(address, timeout=0.5).symbols, message(b"x"))
    assert time.monotonic() - started < 3


def test_nobody_listening_is_a_clear_error() -> None:
    from peers.spamd import free_port

    with pytest.raises(SpamdError, match="cannot reach spamd"):
        call(client(f"127.0.0.1:{free_port()}").symbols, message(b"x"))


def test_a_unix_socket_address(tmp_path: Any) -> None:
    """An address starting with / is spamd's --socketpath (here a scripted server)."""
    path = str(tmp_path / "spamd.sock")
    reply = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 1000.5 / 5.0\r\n\r\nGTUBE"
    factory = Factory.forProtocol(lambda: _Scripted(reply, 1))
    port = call(reactor.listenUNIX, path, factory)
    try:
        score = call(client(path).symbols, message(b"x"))
    finally:
        call(port.stopListening)
    assert score.spam and score.score == 1000.5 and score.symbols == ("GTUBE",)


def test_ping_a_real_spamd(spamd: Spamd) -> None:  # noqa: F811
    """spamd answers PING with ``SPAMD/1.5 0 PONG`` and no blank line: that is an answer."""
    assert call(client(spamd.address).ping) is None


def test_a_reply_with_no_blank_line_parses() -> None:
    reply = parse_reply(b"SPAMD/1.5 0 PONG\r\n")
    assert (reply.code, reply.message, reply.headers, reply.body) == (0, "PONG", {}, b"")


class _Silent(Protocol):
    """Reads the request and never answers; counts its open connections."""

    open: list[_Silent] = []

    def connectionMade(self) -> None:
        self.open.append(self)

    def connectionLost(self, reason: object = None) -> None:
        self.open.remove(self)


def test_cancelling_a_request_closes_its_connection() -> None:
    """The chain's time-out (or a stop) cancels a scan: the connection to spamd goes."""
    from twisted.internet import defer

    port = call(reactor.listenTCP, 0, Factory.forProtocol(_Silent), 50, "127.0.0.1")
    try:
        spamc = client(f"127.0.0.1:{port.getHost().port}", timeout=30)
        failures: list[Any] = []
        # (In a list: blockingCallFromThread would wait for a Deferred returned.)
        [pending] = call(lambda: [spamc.symbols(message(b"x")).addErrback(failures.append)])
        deadline = time.monotonic() + 5
        while not _Silent.open and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(_Silent.open) == 1
        call(pending.cancel)
        while _Silent.open and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _Silent.open == []
        assert len(failures) == 1 and failures[0].check(defer.CancelledError)
    finally:
        call(port.stopListening)


def test_cancelling_while_connecting_stops_the_attempt() -> None:
    """Cancelled before the connection is made: a CancelledError, not a time-out, and no
    connection is left behind."""
    from twisted.internet import defer

    port = call(reactor.listenTCP, 0, Factory.forProtocol(_Silent), 50, "127.0.0.1")
    try:
        spamc = client(f"127.0.0.1:{port.getHost().port}", timeout=30)
        failures: list[Any] = []

        def start_and_cancel() -> None:
            pending = spamc.symbols(message(b"x"))
            pending.addErrback(failures.append)
            pending.cancel()

        call(start_and_cancel)
        time.sleep(0.3)
        assert _Silent.open == []
        assert len(failures) == 1 and failures[0].check(defer.CancelledError)
    finally:
        call(port.stopListening)
