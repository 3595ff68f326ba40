"""A counting SMTP sink for the delivery benchmarks, and the DNS that routes domains to it.

The sink accepts every sender, recipient and message and keeps nothing: it counts the
recipients accepted (``RCPT``), the messages (one per completed ``DATA``, that is one per
transaction) and the time of the last of each.  It offers PIPELINING (RFC 2920), 8BITMIME
(RFC 6152) and SMTPUTF8 (RFC 6531), and neither STARTTLS nor XVERP, so every client sends in
plaintext and expands VERP itself.  It is a bare ``Protocol`` (no ``twisted.mail``), cheap
enough not to be what a benchmark measures.

Two commands of its own serve the benchmark on any connection: ``XSTATS`` answers
``250 <rcpts> <messages> <senders> <time of first RCPT> <time of last RCPT> <time of last
message>`` (Unix times)
and ``XRESET`` zeroes the counts.

Run it as a process of its own (``python bench/countsink.py --domains 100``): it prints
``<smtp port> <dns port>`` on one line once both listen on 127.0.0.1, then serves until killed.
Its DNS server answers ``d<i>.sink.test MX 10 mx.sink.test`` and ``mx.sink.test A 127.0.0.1``;
every other name is NXDOMAIN (so MTA-STS and TLS-RPT lookups find no policy).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

#: A command line longer than this closes the connection (RFC 5321 §4.5.3.1.4 allows 512).
MAX_LINE = 4096
_END = b"\r\n.\r\n"


class Counts:
    """What every connection of one sink adds to."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.rcpts = 0
        self.messages = 0
        self.senders: set[bytes] = set()
        self.first_rcpt = 0.0
        self.last_rcpt = 0.0
        self.last_message = 0.0

    def line(self) -> bytes:
        return (
            f"250 {self.rcpts} {self.messages} {len(self.senders)} "
            f"{self.first_rcpt:.6f} {self.last_rcpt:.6f} {self.last_message:.6f}\r\n"
        ).encode()


class SinkProtocol(Protocol):
    """One SMTP connection to the sink."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.buffer = b""
        self.in_data = False
        self.closing = False
        #: In DATA: the buffer already starts with what precedes its octets (no CRLF to add).
        self.framed = False

    def connectionMade(self) -> None:
        self.transport.write(b"220 mx.sink.test ESMTP count sink\r\n")  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        replies: list[bytes] = []
        while True:
            if self.in_data:
                # RFC 5321 §4.1.1.4: the data ends with CRLF "." CRLF; the CRLF that ends
                # DATA's command line counts as the first one, hence the CRLF put in front.
                # What is scanned is dropped but for the last four octets (memory stays
                # bounded whatever the message's size).
                framed = self.buffer if self.framed else b"\r\n" + self.buffer
                end = framed.find(_END)
                if end < 0:
                    self.buffer, self.framed = framed[-(len(_END) - 1) :], True
                    break
                self.buffer = framed[end + len(_END) :]
                self.in_data = self.framed = False
                self.counts.messages += 1
                self.counts.last_message = time.time()
                replies.append(b"250 2.0.0 Ok: counted\r\n")
                continue
            eol = self.buffer.find(b"\r\n")
            if eol < 0:
                if len(self.buffer) > MAX_LINE:
                    self.transport.loseConnection()  # type: ignore[attr-defined]
                break
            line, self.buffer = self.buffer[:eol], self.buffer[eol + 2 :]
            replies.append(self.command(line))
            if self.closing:
                break
        if replies:
            self.transport.write(b"".join(replies))  # type: ignore[attr-defined]
        if self.closing:
            self.transport.loseConnection()  # type: ignore[attr-defined]

    def command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        counts = self.counts
        if verb == b"RCPT":
            counts.rcpts += 1
            counts.last_rcpt = time.time()
            counts.first_rcpt = counts.first_rcpt or counts.last_rcpt
            return b"250 2.1.5 Ok\r\n"
        if verb == b"MAIL":
            counts.senders.add(line[10:].split(b" ", 1)[0])
            return b"250 2.1.0 Ok\r\n"
        if verb == b"DATA":
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb in (b"EHLO", b"HELO"):
            return b"250-mx.sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        if verb == b"QUIT":
            self.closing = True
            return b"221 2.0.0 Bye\r\n"
        if line.upper() == b"XSTATS":
            return counts.line()
        if line.upper() == b"XRESET":
            counts.reset()
            return b"250 2.0.0 Reset\r\n"
        if verb in (b"RSET", b"NOOP"):
            return b"250 2.0.0 Ok\r\n"
        return b"502 5.5.2 Not implemented\r\n"


class SinkFactory(Factory):
    def __init__(self) -> None:
        self.counts = Counts()

    def buildProtocol(self, addr: object) -> SinkProtocol:
        return SinkProtocol(self.counts)


def listen(port: int = 0) -> tuple[IListeningPort, SinkFactory]:
    """Start a sink on 127.0.0.1 (in the reactor thread); its port and its counts."""
    factory = SinkFactory()
    return reactor.listenTCP(port, factory, backlog=256, interface="127.0.0.1"), factory  # type: ignore[attr-defined]


def main() -> None:
    from peers import dns

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=100)
    args = parser.parse_args()
    zone = dns.TestZone()
    for i in range(args.domains):
        zone.set_mx(f"d{i}.sink.test", [(10, "mx.sink.test")])
    zone.set_address("mx.sink.test", "127.0.0.1", ttl=3600)
    port, _ = listen()
    _, dns_port = dns.start(zone)
    print(port.getHost().port, dns_port, flush=True)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
