"""Live updates (issue 16 point 3): the folder tree's unread counts change as mail arrives,
without a reload, through server-sent events (WHATWG HTML §9.2, ``text/event-stream``).

``GET /events`` keeps the response open.  Every open stream of one session (its tabs) shares
one :class:`SessionWatch`, which listens to the user's folders (the store's change
notifications, the same source as IMAP IDLE) and, for changes made by other processes (an MX
worker, a second server), syncs INBOX every :data:`POLL` seconds and the other folders a slice
at a time, and lists the folders again every :data:`TREE_EVERY` polls.  After a change it
sends one ``folders`` event with every folder's unread count and the names of the folders that
changed; ``static/live.js`` updates the tree and tells the page (``ourmail:folder-changed``),
so a list can refresh itself.

Each event carries the whole state, so a browser that does not read (a suspended laptop) is
sent nothing more until it does, then only the latest event: memory per stream stays bounded.
A comment line every :data:`HEARTBEAT` seconds keeps proxies from closing an idle stream.  A
stream ends with its session (logout, expiry; an open tab is not activity), and a session has
at most :data:`MAX_STREAMS` of them: a browser on HTTP/1.1 has only six connections per host,
so further tabs get ``204 No Content``, which tells their EventSource not to reconnect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import implementer

from ourmail.interfaces import IFolder, IUserStore, StoreError
from ourmail.web.pages import Forged, NotLoggedIn, Pages
from ourmail.web.sessions import SessionStore, WebSession

log = Logger()

#: Seconds between polls for changes by other processes (IMAP IDLE polls each 1 s).
POLL = 2.0
#: Folders besides INBOX synced per poll (a user with many folders is covered in turns).
SYNC_SLICE = 20
#: Polls between listings of the folders (folders made or deleted elsewhere).
TREE_EVERY = 15
#: Seconds between keep-alive comments.
HEARTBEAT = 25.0
#: Seconds a change waits for more changes before the event is sent (a batch of deliveries).
SETTLE = 0.2
#: Open event streams per session.
MAX_STREAMS = 3
#: Milliseconds an EventSource waits before reconnecting after the stream ends (SSE ``retry``).
RETRY_MS = 5000


@implementer(IPushProducer)
class FolderStream:
    """One open ``/events`` response.  It registers as the response's producer: while the
    browser does not read, the latest event waits here instead of piling up in memory."""

    def __init__(self, request: IRequest, on_end: Callable[[], None]) -> None:
        self.request = request
        #: Ends the response (the session ended).
        self.on_end = on_end
        self.paused = False
        self.waiting: bytes | None = None

    def begin(self, first: bytes) -> None:
        """The headers, the reconnection delay and the first event."""
        self.request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        # Tell a proxy (nginx) not to buffer the stream.
        self.request.setHeader(b"X-Accel-Buffering", b"no")
        self.request.registerProducer(self, True)  # type: ignore[attr-defined]
        self.request.write(f"retry: {RETRY_MS}\n\n".encode() + first)

    def push(self, event: bytes) -> None:
        """Send ``event`` now, or keep it (replacing an older one) until the browser reads."""
        if self.paused:
            self.waiting = event
        else:
            self.request.write(event)

    def heartbeat(self) -> None:
        if not self.paused:
            self.request.write(b": keep-alive\n\n")

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.waiting is not None:
            event, self.waiting = self.waiting, None
            self.request.write(event)

    def stopProducing(self) -> None:
        self.paused, self.waiting = True, None


class SessionWatch:
    """The user's folders, watched for every open stream of one session."""

    def __init__(
        self, session: WebSession, sessions: SessionStore, clock: Any, on_idle: Callable[[], None]
    ) -> None:
        self.session = session
        self.sessions = sessions
        self.clock = clock
        #: Called once the last stream is gone.
        self.on_idle = on_idle
        self.user: IUserStore = session.login.avatar
        self.streams: list[FolderStream] = []
        self.folders: dict[str, IFolder] = {}
        self.listeners: dict[str, Callable[[], None]] = {}
        self.names: list[str] = []
        self.changed: set[str] = set()
        self.polls = 0
        self.turn = 0
        self._flush: Any = None
        self._poll = LoopingCall(self.poll)
        self._poll.clock = clock

    # -- streams ---------------------------------------------------------------------------

    def add(self, stream: FolderStream) -> bytes:
        """Watch for ``stream`` too; the first event it should get (raises when the folders
        cannot be read, before anything is written)."""
        if not self.streams:
            self.list_folders()
            self.changed.clear()  # a new page needs the counts, not a change per folder
        first = self.event(changed=[])
        self.streams.append(stream)
        if not self._poll.running:
            self._poll.start(POLL, now=False)
        return first

    def remove(self, stream: FolderStream) -> None:
        if stream in self.streams:
            self.streams.remove(stream)
        if not self.streams:
            self.stop()
            self.on_idle()

    def stop(self) -> None:
        if self._poll.running:
            self._poll.stop()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        for name, folder in self.folders.items():
            folder.remove_listener(self.listeners[name])
        self.folders.clear()
        self.listeners.clear()

    # -- watching --------------------------------------------------------------------------

    def list_folders(self) -> None:
        """Listen to every folder the user has now (folders come and go)."""
        names = self.user.list_folders()
        for name in set(self.folders) - set(names):
            self.folders.pop(name).remove_listener(self.listeners.pop(name))
        for name in names:
            if name in self.folders:
                continue
            try:
                folder = self.user.folder(name)
            except StoreError:  # deleted by another process since the listing
                continue
            listener = self._listener(name)
            folder.add_listener(listener)
            self.folders[name], self.listeners[name] = folder, listener
        if names != self.names:
            self.names = names
            self.changed.update(names)

    def _listener(self, name: str) -> Callable[[], None]:
        return lambda: self.touched(name)

    def touched(self, name: str) -> None:
        """A folder changed: send the counts soon (changes often come in bursts)."""
        self.changed.add(name)
        if self._flush is None and self.streams:
            self._flush = self.clock.callLater(SETTLE, self.send)

    def poll(self) -> None:
        """End the streams with the session; pick up changes made by other processes."""
        if not self.sessions.alive(self.session):
            for stream in list(self.streams):
                stream.on_end()
            return
        self.polls += 1
        try:
            if self.polls % TREE_EVERY == 0:
                self.list_folders()
            others = [n for n in self.names if n != "INBOX" and n in self.folders]
            chosen = others[self.turn : self.turn + SYNC_SLICE]
            self.turn = self.turn + SYNC_SLICE if self.turn + SYNC_SLICE < len(others) else 0
            for name in ["INBOX", *chosen]:
                folder = self.folders.get(name)
                if folder is None:
                    continue
                try:
                    folder.sync()  # notifies the listener when it changed
                except StoreError as e:
                    log.info("live updates: {folder} not synced: {error}", folder=name, error=e)
            if self.changed and self._flush is None:
                self.send()
            if self.polls % round(HEARTBEAT / POLL) == 0:
                for stream in self.streams:
                    stream.heartbeat()
        except Exception:  # the loop must go on: it is what ends the streams with the session
            log.failure("live updates of {user}", user=self.session.address)

    def event(self, changed: list[str]) -> bytes:
        """One ``folders`` event: every folder's [name, unread], and what changed."""
        rows = []
        for name in self.names:
            folder = self.folders.get(name)
            if folder is not None:
                rows.append([name, folder.unseen_count()])
        data = json.dumps({"folders": rows, "changed": changed})
        return b"event: folders\ndata: " + data.encode() + b"\n\n"

    def send(self) -> None:
        self._flush = None
        if not self.streams:
            return
        event = self.event(sorted(self.changed))
        self.changed = set()
        for stream in self.streams:
            stream.push(event)


class LivePages(Pages):
    """``GET /events``: the folder counts of the logged-in user, pushed."""

    app = Pages.app

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The watch of each session with open streams (by session id).
        self.watches: dict[str, SessionWatch] = {}

    @app.route("/events", methods=["GET"])
    def events(self, request: IRequest) -> Deferred[bytes] | bytes:
        # Fetch metadata (W3C): only this site's own pages open the stream; an <img> on a
        # sibling site must not use up the session's streams.
        site = request.getHeader(b"sec-fetch-site")
        if site is not None and site not in (b"same-origin", b"none"):
            raise Forged()
        # Not self.user(): a stream (and its reconnects) is not the user's activity.
        session = self.peek_session(request)
        if session is None:
            raise NotLoggedIn()
        watch = self.watches.get(session.id)
        if watch is None:

            def idle() -> None:
                self.watches.pop(session.id, None)

            watch = SessionWatch(session, self.sessions, self.services.reactor, idle)
            self.watches[session.id] = watch
        if len(watch.streams) >= MAX_STREAMS:
            request.setResponseCode(204)  # SSE: an EventSource does not reconnect after 204
            return b""

        def forget() -> None:
            if getattr(request, "channel", None) is not None:  # None once disconnected
                request.unregisterProducer()  # type: ignore[attr-defined]
            watch.remove(stream)

        def session_ended() -> None:
            forget()
            done.callback(b"")

        # The response ends when the session does (the Deferred fires; klein finishes the
        # response) or when the browser goes away (klein cancels the Deferred).
        done: Deferred[bytes] = Deferred(lambda _: forget())
        stream = FolderStream(request, session_ended)
        try:
            first = watch.add(stream)
        except Exception:
            watch.remove(stream)
            raise
        stream.begin(first)
        return done
