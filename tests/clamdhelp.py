"""Fake clamd servers for the failures a real clamd does not show on demand (garbage, endless
answers, silence, closing), as the ``fake_clamd`` fixture: ``fake_clamd(answer)`` listens on
a loopback port and returns its ``HOST:PORT``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from storehelp import on_reactor
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

#: What a fake answers to the bytes received so far (None: close the connection).
Answer = Callable[["Fake", bytes], "bytes | None"]


class Fake(Protocol):
    """A clamd impostor: ``answer`` gets each piece of data received and says what to send
    back; ``received`` holds all of it."""

    answer: Answer

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        reply = type(self).answer(self, data)
        assert self.transport is not None
        if reply is None:
            self.transport.loseConnection()
        elif reply:
            self.transport.write(reply)


def stream_ended(fake: Fake) -> bool:
    """Whether the last INSTREAM's zero-length chunk has arrived."""
    return fake.received.endswith(b"\0\0\0\0")


@pytest.fixture(name="fake_clamd")
def fake_clamd_fixture() -> Iterator[Callable[[Answer], str]]:
    ports = []

    def start(answer: Answer) -> str:
        protocol = type("Answering", (Fake,), {"answer": staticmethod(answer)})
        port = on_reactor(
            lambda: reactor.listenTCP(0, Factory.forProtocol(protocol), interface="127.0.0.1")
        )
        ports.append(port)
        return f"127.0.0.1:{port.getHost().port}"

    yield start
    for port in ports:
        on_reactor(port.stopListening)
