"""The clamd client (``ourmail.filters.clamd``) against a real clamd, and against fake ones
for what a real clamd does not do on demand: garbage, endless answers, silence."""

from __future__ import annotations

import base64
import io
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from clamdhelp import Fake, fake_clamd_fixture, stream_ended  # noqa: F401 - a fixture
from peers import clamd as peer
from storehelp import on_reactor
from twisted.internet import defer, reactor

from ourmail.filters import clamd
from ourmail.filters.clamd import ClamdClient, ClamdError, ClamdSizeLimit, ScanResult, TooLarge

CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\n" + b"nothing to see here\r\n" * 200


def scan(client: ClamdClient, content: Any, timeout: float = 20) -> ScanResult:
    """The client's verdict, given ``timeout`` seconds."""

    def go() -> defer.Deferred[ScanResult]:
        return client.scan(content).addTimeout(timeout, reactor)

    result: ScanResult = on_reactor(go)
    return result


def new_client(address: str, **kw: Any) -> ClamdClient:
    return on_reactor(lambda: ClamdClient(reactor, address, **kw))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server() -> peer.Clamd:
    return peer.shared()


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buffer.getvalue()


def test_parse_reply() -> None:
    assert clamd.parse_reply("stream: OK") == ScanResult()
    assert (
        clamd.parse_reply("stream: Win.Test.EICAR_HDB-1 FOUND").signature == "Win.Test.EICAR_HDB-1"
    )
    with pytest.raises(ClamdSizeLimit):
        clamd.parse_reply("INSTREAM size limit exceeded. ERROR")
    with pytest.raises(ClamdError, match="Can't allocate memory"):
        clamd.parse_reply("Can't allocate memory ERROR")
    with pytest.raises(ClamdError, match="not a reply of clamd"):
        clamd.parse_reply("PONG")


def test_addresses() -> None:
    assert isinstance(clamd.endpoint(reactor, "/run/clamav/clamd.ctl"), clamd.UNIXClientEndpoint)
    assert isinstance(clamd.endpoint(reactor, "localhost:3310"), clamd.TCP4ClientEndpoint)
    assert isinstance(clamd.endpoint(reactor, "[::1]:3310"), clamd.TCP6ClientEndpoint)
    for bad in ("clamd.example.test:3310", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:x", ""):
        with pytest.raises(ValueError):
            clamd.endpoint(reactor, bad)


def test_clean_and_infected_over_tcp_and_unix_socket(server: peer.Clamd) -> None:
    for address in (server.address, server.socket):
        client = new_client(address)
        assert scan(client, CLEAN) == ScanResult()
        assert scan(client, peer.EICAR).signature == peer.SIGNATURE
        on_reactor(client.close)


def test_nested_and_encoded_viruses_are_clamds_job(server: peer.Clamd) -> None:
    client = new_client(server.address)
    b64 = base64.encodebytes(zipped("eicar.com", peer.EICAR)).replace(b"\n", b"\r\n")
    message = (
        b"From: a@example.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
        b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b64
        + b"--b--\r\n"
    )
    assert scan(client, message).signature == peer.SIGNATURE
    on_reactor(client.close)


def test_a_file_is_streamed_in_chunks_and_sessions_are_reused(
    server: peer.Clamd, tmp_path: Path
) -> None:
    big = tmp_path / "big.eml"
    with big.open("wb") as f:
        f.write(b"Subject: big\r\n\r\n")
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
        f.write(line * (20 * 1024 * 1024 // len(line)))
        f.write(peer.EICAR + b"\r\n")  # at the very end: every chunk was sent
    client = new_client(server.address, connections=2)
    assert scan(client, big, timeout=60).signature == peer.SIGNATURE
    (session,) = client._idle
    assert scan(client, CLEAN) == ScanResult()
    assert client._idle == [session]  # the same IDSESSION connection
    on_reactor(client.close)
    assert client._idle == []


def test_too_large_is_not_sent(tmp_path: Path) -> None:
    client = new_client("127.0.0.1:1", max_size=1000)  # nothing listens there
    with pytest.raises(TooLarge) as e:
        scan(client, b"x" * 1001)
    assert (e.value.size, e.value.limit) == (1001, 1000)
    (tmp_path / "m").write_bytes(b"x" * 1001)
    with pytest.raises(TooLarge):
        scan(client, tmp_path / "m")


def test_clamds_own_size_limit() -> None:
    with peer.clamd(stream_max=1024 * 1024) as small:
        client = new_client(small.address)
        with pytest.raises(ClamdSizeLimit):
            scan(client, b"x" * (2 * 1024 * 1024))
        assert client._idle == []  # clamd closes that connection: not kept
        assert scan(client, CLEAN) == ScanResult()


def test_clamd_down(tmp_path: Path) -> None:
    for address in (f"127.0.0.1:{peer.free_port()}", str(tmp_path / "no.sock")):
        client = new_client(address)
        with pytest.raises(ClamdError, match="cannot connect to clamd"):
            scan(client, CLEAN)


def test_garbage_is_a_clear_error(fake_clamd: Any) -> None:
    client = new_client(fake_clamd(lambda f, d: b"HELLO THERE\0" if stream_ended(f) else b""))
    with pytest.raises(ClamdError, match="not a reply of clamd: b'HELLO THERE'"):
        scan(client, CLEAN)
    client = new_client(fake_clamd(lambda f, d: b"1: I am not clamd\0" if stream_ended(f) else b""))
    with pytest.raises(ClamdError, match="not a reply of clamd: 'I am not clamd'"):
        scan(client, CLEAN)
    client = new_client(fake_clamd(lambda f, d: b"7: stream: OK\0" if stream_ended(f) else b""))
    with pytest.raises(ClamdError, match="not a reply"):  # another request's id
        scan(client, CLEAN)


def test_an_endless_answer_is_cut_off(fake_clamd: Any) -> None:
    client = new_client(fake_clamd(lambda f, d: b"1: stream: " + b"A" * 100_000))
    with pytest.raises(ClamdError, match="more than 4096 bytes"):
        scan(client, CLEAN)


def test_a_closed_connection_is_an_error(fake_clamd: Any) -> None:
    client = new_client(fake_clamd(lambda f, d: None))
    with pytest.raises(clamd.ClamdClosed, match="clamd closed the connection"):
        scan(client, CLEAN)


def test_silence_is_cancelled_and_the_connection_dropped(fake_clamd: Any) -> None:
    seen: list[Fake] = []

    def never(f: Fake, data: bytes) -> bytes:
        seen.append(f)
        return b""

    client = new_client(fake_clamd(never))
    with pytest.raises(defer.TimeoutError):
        scan(client, CLEAN, timeout=0.5)
    assert client._turns.tokens == client._turns.limit  # the turn was given back
    deadline = time.monotonic() + 5
    while not seen[0].transport.disconnected and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)
    assert seen[0].transport.disconnected  # type: ignore[union-attr]


def test_a_clamd_that_stops_reading_is_cancelled_mid_stream(fake_clamd: Any) -> None:
    """The socket's buffers fill, the client waits to write (flow control) and the time-out
    cancels that wait; the turn is given back."""

    def stop_reading(f: Fake, data: bytes) -> bytes:
        f.transport.pauseProducing()  # type: ignore[union-attr]
        return b""

    client = new_client(fake_clamd(stop_reading), connections=1)
    with pytest.raises(defer.TimeoutError):
        scan(client, b"x" * (20 * 1024 * 1024), timeout=1)
    assert client._turns.tokens == 1 and client._idle == []


def test_a_session_closed_while_kept_is_retried_once(fake_clamd: Any) -> None:
    def first_only(f: Fake, data: bytes) -> bytes | None:
        if f.received.count(b"zINSTREAM\0") > 1:
            return None  # as clamd after its IdleTimeout
        return b"1: stream: OK\0" if stream_ended(f) else b""

    client = new_client(fake_clamd(first_only))
    assert scan(client, CLEAN) == ScanResult()
    assert scan(client, CLEAN) == ScanResult()  # the kept session failed; a new one answered
