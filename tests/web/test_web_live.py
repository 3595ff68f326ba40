"""Issue 16 point 3: the folder tree's counts pushed as mail arrives (server-sent events on
``/events``): over HTTPS against a real server, mail delivered over SMTP."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, client_tls, running_server
from imaphelp import deliver
from webhelp import Browser

from ourmail.web import live


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as server:
        yield server


class EventStream:
    """An open ``/events`` response, read event by event."""

    def __init__(self, srv: RunningServer, browser: Browser) -> None:
        self.conn = http.client.HTTPSConnection(
            "127.0.0.1", srv.port("web"), context=client_tls(), timeout=30
        )
        cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        self.conn.request("GET", "/events", headers={"Cookie": cookies})
        self.response = self.conn.getresponse()
        self.buffer = b""

    def next(self) -> tuple[str, Any] | None:
        """The next event as (name, JSON data), skipping comments; None at the stream's end."""
        while True:
            while b"\n\n" not in self.buffer:
                chunk = self.response.read1(65536)
                if not chunk:
                    return None
                self.buffer += chunk
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            fields = dict(
                line.split(": ", 1) for line in block.decode().splitlines() if ": " in line
            )
            if "event" in fields:
                return fields["event"], json.loads(fields["data"])

    def close(self) -> None:
        self.conn.close()


def logged_in(srv: RunningServer) -> Browser:
    browser = Browser(srv)
    assert browser.login(srv.user, srv.password).status == 303
    return browser


def counts(event: tuple[str, Any] | None) -> dict[str, int]:
    assert event is not None and event[0] == "folders"
    return {name: unseen for name, unseen in event[1]["folders"]}


def test_new_mail_is_pushed_to_the_open_page(srv: RunningServer) -> None:
    browser = logged_in(srv)
    stream = EventStream(srv, browser)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("content-type").startswith("text/event-stream")
        first = stream.next()
        assert counts(first)["INBOX"] == 0 and "Trash" in counts(first)
        assert first is not None and first[1]["changed"] == []
        deliver(srv, 2)
        seen: dict[str, int] = {}
        while seen.get("INBOX") != 2:
            event = stream.next()
            seen = counts(event)
            assert event is not None and event[1]["changed"] == ["INBOX"]
    finally:
        stream.close()


def test_the_stream_ends_at_logout(srv: RunningServer) -> None:
    browser = logged_in(srv)
    stream = EventStream(srv, browser)
    try:
        counts(stream.next())
        token = browser.get("/").csrf()
        assert browser.post("/logout", {"csrf": token}).status == 303
        # Within one poll the stream sees the session is over and ends.
        while (event := stream.next()) is not None:
            counts(event)
    finally:
        stream.close()


def test_without_a_session_there_is_no_stream(srv: RunningServer) -> None:
    reply = Browser(srv).get("/events")
    assert reply.status == 303 and reply.headers["location"] == "/login"


def test_a_session_has_a_bounded_number_of_streams(srv: RunningServer) -> None:
    browser = logged_in(srv)
    streams = [EventStream(srv, browser) for _ in range(live.MAX_STREAMS)]
    try:
        for stream in streams:
            assert stream.response.status == 200
            counts(stream.next())
        # One more: 204, which tells an EventSource not to reconnect.
        assert browser.get("/events").status == 204
    finally:
        for stream in streams:
            stream.close()
    # Closed streams are forgotten: a new one opens again.
    for _ in range(50):
        again = EventStream(srv, browser)
        if again.response.status == 200:
            again.close()
            break
        again.close()
        time.sleep(0.1)
    else:
        pytest.fail("closed streams were never forgotten")


def test_another_site_cannot_open_the_stream(srv: RunningServer) -> None:
    browser = logged_in(srv)
    reply = browser.request("GET", "/events", headers={"Sec-Fetch-Site": "same-site"})
    assert reply.status == 403


class FakeRequest:
    """What FolderStream writes, and whether it is registered as the producer."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        self.producer: object = None

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def registerProducer(self, producer: object, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_a_browser_that_does_not_read_gets_only_the_latest_event() -> None:
    request = FakeRequest()
    stream = live.FolderStream(request, lambda: None)  # type: ignore[arg-type]
    stream.begin(b"event: folders\ndata: 0\n\n")
    assert request.producer is stream and len(request.written) == 1
    stream.pauseProducing()  # the socket's buffer is full
    for n in range(1000):
        stream.push(b"event: folders\ndata: %d\n\n" % n)
        stream.heartbeat()
    assert len(request.written) == 1
    stream.resumeProducing()
    assert request.written[1:] == [b"event: folders\ndata: 999\n\n"]


class BrokenUser:
    """A user whose folders cannot be listed (a full file table, say)."""

    address = "ann@example.test"

    def list_folders(self) -> list[str]:
        raise OSError(24, "Too many open files")


def test_a_stream_that_cannot_start_leaves_nothing_behind() -> None:
    from twisted.internet.task import Clock

    from ourmail.web.sessions import SessionStore

    clock = Clock()
    sessions = SessionStore(clock)

    class Login:
        avatar = BrokenUser()

        def end(self) -> None:
            pass

    session = sessions.create(Login())  # type: ignore[arg-type]
    gone: list[bool] = []
    watch = live.SessionWatch(session, sessions, clock, lambda: gone.append(True))
    stream = live.FolderStream(FakeRequest(), lambda: None)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        watch.add(stream)
    watch.remove(stream)
    assert gone and not watch.streams and not watch._poll.running
