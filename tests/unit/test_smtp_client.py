"""The queue's SMTP client: reply parsing under garbage, time-outs, dot-stuffing."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from ourmail.net.dotstuff import dot_stuff
from ourmail.queue.client import MAX_REPLY_LINES, Reply, ReplyReader


def reader() -> tuple[ReplyReader, StringTransport, Clock]:
    clock = Clock()
    proto = ReplyReader(clock, 30)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def test_multiline_reply_and_enhanced_status() -> None:
    proto, _, _ = reader()
    got: list[Reply] = []
    proto.expect().addCallback(got.append)
    proto.dataReceived(b"250-mx.test\r\n250-SIZE 100\r\n250 DSN\r\n")
    assert got == [Reply(250, ("mx.test", "SIZE 100", "DSN"))]
    assert Reply(550, ("5.1.1 unknown",)).status == "5.1.1"
    assert Reply(550, ("4.1.1 inconsistent",)).status == "5.0.0"  # class must agree
    assert Reply(451, ("try later",)).status == "4.0.0"


def test_garbage_reply_closes_the_connection() -> None:
    for garbage in (b"hello\r\n", b"25\r\n", b"250x\r\n", b"x" * 5000 + b"\r\n"):
        proto, transport, _ = reader()
        failures: list[object] = []
        proto.expect().addErrback(failures.append)
        proto.dataReceived(garbage)
        assert transport.disconnecting


def test_endless_multiline_reply_is_cut() -> None:
    proto, transport, _ = reader()
    proto.expect()
    proto.dataReceived(b"250-x\r\n" * (MAX_REPLY_LINES + 1))
    assert transport.disconnecting


def test_silence_times_out() -> None:
    proto, transport, clock = reader()
    errors: list[object] = []
    proto.expect().addErrback(errors.append)
    clock.advance(31)
    assert errors and transport.disconnected


def test_dot_stuffing() -> None:
    assert dot_stuff(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"
    assert dot_stuff(b"no newline") == b"no newline\r\n.\r\n"


def test_replies_injected_before_the_tls_handshake_are_discarded() -> None:
    proto, _, _ = reader()
    got: list[Reply] = []
    proto.send_starttls().addCallback(got.append)
    # A man in the middle appends a fake EHLO answer to the server's STARTTLS reply.
    proto.dataReceived(b"220 go ahead\r\n250-mx.test\r\n250 AUTH PLAIN\r\n250 par")
    assert got == [Reply(220, ("go ahead",))]
    after: list[Reply] = []
    proto.expect().addCallback(after.append)  # the EHLO sent inside TLS
    assert after == []  # not answered by the injected lines
    proto.dataReceived(b"250-real.mx\r\n250 SIZE 10\r\n")
    assert after == [Reply(250, ("real.mx", "SIZE 10"))]
