"""Connection limits counted by the master for its worker processes (ourmail/net/admission.py):
the table, the line exchange over a worker's socket, release when a worker goes, the local
fallback when the master goes, and the paused gate in front of a session."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from ourmail.config import Limits
from ourmail.net.admission import (
    TOO_MANY,
    TOO_MANY_FROM_CLIENT,
    AdmittingFactory,
    ConnectionCounts,
    CountsClient,
    CountsServer,
)
from ourmail.net.lineproto import LineProtocol, SessionFactory

LIMITS = Limits(max_connections=5, max_connections_per_ip=2)


def pair(counts: ConnectionCounts) -> tuple[CountsClient, CountsServer, StringTransport]:
    """A worker's end and the master's end, each on a string transport."""
    client, server = CountsClient(LIMITS), CountsServer(counts)
    client.makeConnection(StringTransport())
    server.makeConnection(StringTransport())
    return client, server, server.transport


def pump(client: CountsClient, server: CountsServer) -> None:
    """Carry what each side wrote to the other, until both are quiet."""
    while client.transport.value() or server.transport.value():
        to_server, to_client = client.transport.value(), server.transport.value()
        client.transport.clear()
        server.transport.clear()
        server.dataReceived(to_server)
        client.dataReceived(to_client)


def test_limits_per_client_and_in_all() -> None:
    counts = ConnectionCounts(LIMITS)
    assert [counts.admit("a") for _ in range(3)] == [None, None, TOO_MANY_FROM_CLIENT]
    assert [counts.admit(c) for c in "bbcc"] == [None, None, None, TOO_MANY]
    counts.release("a")
    assert counts.admit("c") is None
    counts.release("nobody")  # never counted: nothing changes
    assert counts.total == 5


def test_workers_share_the_masters_table() -> None:
    counts = ConnectionCounts(LIMITS)
    w1, m1, _ = pair(counts)
    w2, m2, _ = pair(counts)
    answers: list[str | None] = []
    w1.admit("10.0.0.1").addCallback(answers.append)
    assert answers == []  # waits for the master
    pump(w1, m1)
    w2.admit("10.0.0.1").addCallback(answers.append)
    w2.admit("10.0.0.1").addCallback(answers.append)
    pump(w2, m2)
    assert answers == [None, None, TOO_MANY_FROM_CLIENT]
    w1.release("10.0.0.1")
    pump(w1, m1)
    w2.admit("10.0.0.1").addCallback(answers.append)
    pump(w2, m2)
    assert answers[-1] is None


def test_a_worker_that_goes_gives_its_sessions_back() -> None:
    counts = ConnectionCounts(LIMITS)
    worker, master, _ = pair(counts)
    for _ in range(2):
        worker.admit("10.0.0.1")
    pump(worker, master)
    assert counts.open == {"10.0.0.1": 2}
    master.connectionLost(None)
    assert counts.open == {} and counts.total == 0
    master.lineReceived(b"R 10.0.0.1")  # a late release counts nothing twice
    assert counts.total == 0


def test_without_its_master_a_worker_decides_locally() -> None:
    worker, master, _ = pair(ConnectionCounts(LIMITS))
    waiting: list[str | None] = []
    worker.admit("10.0.0.1").addCallback(waiting.append)
    worker.connectionLost(None)  # the master is gone before answering
    assert waiting == [None]
    later: list[str | None] = []
    for _ in range(2):
        worker.admit("10.0.0.1").addCallback(later.append)
    assert later == [None, TOO_MANY_FROM_CLIENT]  # still limited


def test_bad_lines_from_a_worker_change_nothing() -> None:
    counts = ConnectionCounts(LIMITS)
    master = CountsServer(counts)
    master.makeConnection(StringTransport())
    for line in (b"", b"X", b"R", b"R 10.0.0.9", b"A", b"\xff\xfe"):
        master.lineReceived(line)
    assert counts.total == 0


class Recorder(LineProtocol):
    """A session that records what happened to it."""

    def __init__(self, ctx: object) -> None:
        super().__init__(LIMITS)
        self.events: list[str] = []

    def connectionMade(self) -> None:
        super().connectionMade()
        self.events.append("refused" if self.refused else "greeted")


class Ctx:
    limits = LIMITS


def test_the_gate_holds_a_connection_until_the_master_answers() -> None:
    counts = ConnectionCounts(LIMITS)
    worker, master, _ = pair(counts)
    sessions = SessionFactory(Recorder, Ctx(), counts=worker)
    gate = AdmittingFactory(sessions, worker).buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 1))
    gate.makeConnection(transport)
    assert transport.producerState == "paused"
    pump(worker, master)
    session = transport.protocol
    assert isinstance(session, Recorder) and session.events == ["greeted"]
    assert transport.producerState == "producing"
    assert counts.open == {"10.0.0.1": 1}
    session.connectionLost(None)
    pump(worker, master)
    assert counts.open == {}


def test_a_connection_closed_while_waiting_is_given_back() -> None:
    counts = ConnectionCounts(LIMITS)
    worker, master, _ = pair(counts)
    sessions = SessionFactory(Recorder, Ctx(), counts=worker)
    gate = AdmittingFactory(sessions, worker).buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
    transport = StringTransport()
    gate.makeConnection(transport)
    gate.connectionLost(None)
    pump(worker, master)
    assert counts.total == 0
    assert not hasattr(transport, "protocol")
