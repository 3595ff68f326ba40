"""The delivery benchmark's counting sink (bench/countsink.py) speaks enough SMTP: pipelined
commands, a message split anywhere across reads, dot-stuffed lines, its counts."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from bench.countsink import SinkFactory


def test_sink_counts_pipelined_transactions_whatever_the_reads() -> None:
    factory = SinkFactory()
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    session = (
        b"EHLO client\r\n"
        b"MAIL FROM:<list-bounces+a=x.test@bench.test>\r\nRCPT TO:<a@x.test>\r\n"
        b"RCPT TO:<b@x.test>\r\nDATA\r\n"
        b"Subject: hi\r\n\r\n..a dot-stuffed line\r\n.\r\n"
        b"MAIL FROM:<>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n.\r\n"
        b"XSTATS\r\nQUIT\r\n"
    )
    for i in range(0, len(session), 7):  # reads that cut lines and the end of data
        proto.dataReceived(session[i : i + 7])
    replies = transport.value().split(b"\r\n")
    codes = [r[:3] for r in replies if r[:3].isdigit() and r[3:4] == b" "]
    assert b" ".join(codes) == b"220 250 250 250 250 354 250 250 250 354 250 250 221"
    stats = [r for r in replies if r.startswith(b"250 3 2 2 ")]
    assert len(stats) == 1  # 3 recipients, 2 messages, 2 senders
    assert transport.disconnecting
    counts = factory.counts
    assert (counts.rcpts, counts.messages) == (3, 2) and counts.last_rcpt >= counts.first_rcpt > 0
