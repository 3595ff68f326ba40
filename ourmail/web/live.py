"""Live updates (issue 16 point 3): the folder tree's unread counts change as mail arrives,
without a reload, through server-sent events (WHATWG HTML §9.2, ``text/event-stream``).

``GET /events`` keeps the response open.  The stream listens to the user's folders (the
store's change notifications, the same source as IMAP IDLE) and, for changes made by other
processes (an MX worker, a second server), syncs the folders every :data:`POLL` seconds, as
IDLE does.  Whenever something changed it sends one ``folders`` event with every folder's
unread and total count and the names of the folders that changed; ``static/live.js`` updates
the tree and tells the page (``ourmail:folder-changed``), so a list can refresh itself.

A comment line every :data:`HEARTBEAT` seconds keeps proxies from closing an idle stream and
finds dead connections.  A stream ends with its session (logout, expiry; an open tab does not
count as activity), and a session has at most :data:`MAX_STREAMS` of them: a browser on
HTTP/1.1 has only six connections per host, so further tabs get ``204 No Content``, which
tells their EventSource not to reconnect (they still work, only without live counts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ourmail.interfaces import IFolder, IUserStore, NoSuchFolder, StoreError
from ourmail.web.pages import Pages
from ourmail.web.sessions import SessionStore, WebSession

log = Logger()

#: Seconds between syncs of the folders (changes by other processes); IMAP IDLE polls each 1 s.
POLL = 2.0
#: Seconds between keep-alive comments.
HEARTBEAT = 25.0
#: Seconds a change waits for more changes before the event is sent (a batch of deliveries).
SETTLE = 0.2
#: Open event streams per session.
MAX_STREAMS = 3
#: Milliseconds an EventSource waits before reconnecting after the stream ends (SSE ``retry``).
RETRY_MS = 5000


class FolderStream:
    """One open ``/events`` response: watches one user's folders and writes their counts."""

    def __init__(
        self,
        request: IRequest,
        session: WebSession,
        sessions: SessionStore,
        clock: Any,
        on_end: Callable[[], None],
    ) -> None:
        self.request = request
        self.on_end = on_end
        self.session = session
        self.sessions = sessions
        self.clock = clock
        self.user: IUserStore = session.login.avatar
        self.folders: dict[str, IFolder] = {}
        self.changed: set[str] = set()
        self.names: list[str] = []
        self._flush: Any = None
        self._poll = LoopingCall(self.poll)
        self._poll.clock = clock
        self._beat = LoopingCall(self.heartbeat)
        self._beat.clock = clock
        self.open = True

    def start(self) -> None:
        """Send the headers, the reconnection delay and the first counts; start watching."""
        self.request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        # Tell a proxy (nginx) not to buffer the stream.
        self.request.setHeader(b"X-Accel-Buffering", b"no")
        self.request.write(f"retry: {RETRY_MS}\n\n".encode())
        self.watch()
        self.send()
        self._poll.start(POLL, now=False)
        self._beat.start(HEARTBEAT, now=False)

    def watch(self) -> None:
        """Listen to every folder the user has now (folders come and go)."""
        names = self.user.list_folders()
        for name in set(self.folders) - set(names):
            self.folders.pop(name).remove_listener(self._listener(name))
        for name in names:
            if name not in self.folders:
                try:
                    folder = self.user.folder(name)
                except NoSuchFolder:
                    continue
                folder.add_listener(self._listener(name))
                self.folders[name] = folder
        if names != self.names:
            self.names = names
            self.changed.update(names)

    def _listener(self, name: str) -> Any:
        return _Listener(self, name)

    def touched(self, name: str) -> None:
        """A folder changed: send the counts soon (changes often come in bursts)."""
        self.changed.add(name)
        if self._flush is None and self.open:
            self._flush = self.clock.callLater(SETTLE, self.send)

    def poll(self) -> None:
        """End with the session; else pick up changes made by other processes."""
        if not self.sessions.alive(self.session):
            self.close()
            return
        try:
            self.watch()
            for folder in list(self.folders.values()):
                folder.sync()  # notifies the listeners when it changed
        except StoreError as e:
            log.warn("live updates of {user}: {error}", user=self.session.address, error=e)
        if self.changed and self._flush is None:
            self.send()

    def send(self) -> None:
        """One ``folders`` event: every folder's [name, unread, total], and what changed."""
        self._flush = None
        if not self.open:
            return
        rows = []
        for name in self.names:
            folder = self.folders.get(name)
            if folder is not None:
                rows.append([name, folder.unseen_count(), len(folder.uids())])
        data = json.dumps({"folders": rows, "changed": sorted(self.changed)})
        self.changed = set()
        self.request.write(b"event: folders\ndata: " + data.encode() + b"\n\n")

    def heartbeat(self) -> None:
        if self.open:
            self.request.write(b": keep-alive\n\n")

    def close(self) -> None:
        """The session ended: the owner (``on_end``) stops the stream and ends the response."""
        if self.open:
            self.on_end()

    def stop(self) -> None:
        """Stop watching (the response ended either way)."""
        self.open = False
        for loop in (self._poll, self._beat):
            if loop.running:
                loop.stop()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        for name, folder in self.folders.items():
            folder.remove_listener(self._listener(name))
        self.folders.clear()


class _Listener:
    """A folder listener that compares equal to another for the same stream and folder, so it
    can be removed with a fresh instance."""

    __slots__ = ("name", "stream")

    def __init__(self, stream: FolderStream, name: str) -> None:
        self.stream, self.name = stream, name

    def __call__(self) -> None:
        self.stream.touched(self.name)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Listener) and other.stream is self.stream and other.name == self.name
        )

    def __hash__(self) -> int:
        return hash((id(self.stream), self.name))


class LivePages(Pages):
    """``GET /events``: the folder counts of the logged-in user, pushed."""

    app = Pages.app

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The open streams of each session (by session id).
        self.streams: dict[str, list[FolderStream]] = {}

    @app.route("/events", methods=["GET"])
    def events(self, request: IRequest) -> Deferred[bytes] | bytes:
        session = self.user(request)
        open_streams = self.streams.setdefault(session.id, [])
        if len(open_streams) >= MAX_STREAMS:
            request.setResponseCode(204)  # SSE: an EventSource does not reconnect after 204
            return b""

        def forget() -> None:
            stream.stop()
            open_streams.remove(stream)
            if not open_streams:
                self.streams.pop(session.id, None)

        # The response ends when the session does (the Deferred fires; klein finishes the
        # response) or when the browser goes away (klein cancels the Deferred).
        def session_ended() -> None:
            forget()
            done.callback(b"")

        done: Deferred[bytes] = Deferred(lambda _: forget())
        stream = FolderStream(request, session, self.sessions, self.services.reactor, session_ended)
        open_streams.append(stream)
        stream.start()
        return done
