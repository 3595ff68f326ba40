"""The message view (issue 16 point 5): one message in the browser, safe against its sender.

Routes (docs/webmail.md#the-message-view):

* ``GET /message?folder=F&uid=N[&images=1]``: the message page: header summary, plain-text
  bodies in the page, HTML bodies in sandboxed frames, attachments, enclosed messages in place,
  previous/next, reply/forward links and the delete and spam forms.  Opening it sets ``\\Seen``.
* ``GET /message/body?folder=F&uid=N&part=S[&images=1]``: the frame document of one HTML body,
  sanitised, with the frame's own Content-Security-Policy (``sanitise.frame_headers``).
* ``GET /message/part?folder=F&uid=N&part=S``: a part, downloaded (``attachment``, except
  raster images asked for ``&inline=1``); ``GET /message/part?grant=T&part=S``: an inline
  image of the frame, authorised by the page's grant instead of the cookie.
* ``GET /message/raw?folder=F&uid=N``: the message as stored, as plain text.
* ``POST /message/images`` (``folder``, ``uid``, ``csrf``): always show remote images from
  this message's verified sender (:mod:`ourmail.web.remoteimages`).

Bodies and parts are streamed from the stored message (a memory map) in pieces; views are
built and bodies sanitised in worker threads.
"""

from __future__ import annotations

import functools
from urllib.parse import urlencode

import attrs
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from ourmail.interfaces import IFolder, IStoredMessage, NoSuchFolder
from ourmail.mime import content
from ourmail.mime.structure import Buffer
from ourmail.web import remoteimages
from ourmail.web.attachments import (
    INLINE_TYPES,
    PartDownload,
    content_disposition,
    default_filename,
    open_part,
    safe_filename,
)
from ourmail.web.charsets import header_text
from ourmail.web.frames import DocumentKey, FrameDocuments, Grant, PartGrants
from ourmail.web.messageview import MessageView, build_view
from ourmail.web.pages import Pages
from ourmail.web.safehtml import SafeHTML
from ourmail.web.sanitise import frame_document, frame_headers
from ourmail.web.sessions import WebSession
from ourmail.web.sharedfolders import archive_url, open_shared
from ourmail.web.shown import Addresses, find_body, mailboxes, neighbours, sanitised, shown
from ourmail.web.streaming import stream

#: Types a part is sent as; any other is ``application/octet-stream`` (always downloaded).
SAFE_TYPES = INLINE_TYPES | {
    "application/pdf",
    "application/zip",
    "message/rfc822",
    "text/calendar",
    "text/plain",
}
#: The policy of every part and raw response: nothing in it may run or load anything.
PART_CSP = b"default-src 'none'; sandbox"


def download_name(part: PartDownload) -> str:
    """A part's file name; an enclosed message the sender did not name is called after its
    subject, as the page lists it (``Agenda.eml``)."""
    if part.content_type != "message/rfc822" or part.filename != default_filename(
        part.section, part.content_type
    ):
        return part.filename
    head = next(iter(part.chunks()), b"")
    subject = next((v for n, v in remoteimages.header_fields(head) if n == "subject"), "")
    name = safe_filename(header_text(subject)[:80], "")
    return f"{name}.eml" if name else part.filename


class Missing(Exception):
    """The folder, message or part asked for is not there (404)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@attrs.frozen
class Opened:
    """One stored message found for a request."""

    name: str
    folder: IFolder
    uid: int
    message: IStoredMessage
    #: Found in a folder shared with the user (read-only), not one of their own.
    shared: bool = False

    def query(self, **more: str) -> str:
        """``folder=...&uid=...`` and ``more``, URL-encoded."""
        return urlencode({"folder": self.name, "uid": str(self.uid), **more})


class ReadPages(Pages):
    """The message view's routes (see the module's documentation)."""

    app = Pages.app

    @functools.cached_property
    def part_grants(self) -> PartGrants:
        """The frames' grants of this server process."""
        return PartGrants()

    @functools.cached_property
    def frame_documents(self) -> FrameDocuments:
        """Sanitised bodies waiting for their frames."""
        return FrameDocuments()

    # -- finding the message -------------------------------------------------------------------

    def opened(self, request: IRequest, session: WebSession) -> Opened:
        """The message ``folder`` and ``uid`` of the request name; :class:`Missing` if the
        folder or message is not there (or the fields are malformed)."""
        name = self.form(request, "folder")
        uid_text = self.form(request, "uid", 12) or ""
        if name is None:
            raise Missing("folder")
        if not uid_text.isascii() or not uid_text.isdigit():
            raise Missing("message")
        return self.find(session, name, int(uid_text))

    def find(self, session: WebSession, name: str, uid: int) -> Opened:
        """The message ``uid`` of the user's folder ``name``, or of a folder shared with
        them (``sharedfolders.py``); :class:`Missing` otherwise."""
        shared = False
        try:  # the user's own folder wins over a shared one of the same name
            folder = session.login.avatar.folder(name)
        except NoSuchFolder:
            found = open_shared(self.services.shared, session.address, name)
            if found is None:
                raise Missing("folder") from None
            folder, shared = found, True
        folder.sync()
        try:
            message = folder.message(uid)
        except KeyError:
            raise Missing("message") from None
        return Opened(name, folder, uid, message, shared)

    @staticmethod
    def buffer(opened: Opened) -> Buffer:
        """The stored octets (a memory map of a large message); :class:`Missing` if gone."""
        try:
            return opened.message.buffer()
        except (KeyError, FileNotFoundError):
            raise Missing("message") from None

    @app.handle_errors(Missing)
    def missing(self, request: IRequest, failure: Failure) -> bytes:
        _ = self.gettext(request)
        texts = {
            "folder": _("There is no such folder."),
            "message": _("This message is not there. It may have been moved or deleted."),
            "part": _("This message has no such part."),
        }
        what = failure.value.what if isinstance(failure.value, Missing) else "message"
        return self.error(request, 404, texts.get(what, texts["message"]))

    def allowed_senders(self, session: WebSession) -> list[str]:
        """The senders whose remote images this user always sees."""
        return remoteimages.senders(self.services.preferences, session.address)

    # -- the page ------------------------------------------------------------------------------

    @app.route("/message", methods=["GET"])
    async def message_page(self, request: IRequest) -> bytes:
        session = self.user(request)
        opened = self.opened(request, session)
        data = self.buffer(opened)
        sender = remoteimages.verified_sender(
            bytes(data[: remoteimages.HEAD_LIMIT]), self.services.authserv_id
        )
        asked = self.form(request, "images", 1) == "1"
        always = sender is not None and sender in self.allowed_senders(session)
        allow = asked or always
        readonly = opened.shared
        if "\\Seen" not in opened.message.flags and not readonly:  # RFC 3501 §2.3.2
            opened.folder.store_flags([opened.uid], ["\\Seen"], "+")
        view: MessageView = await deferToThread(build_view, data)
        uidvalidity = int(opened.folder.uidvalidity)
        token = self.part_grants.grant(Grant(session.id, opened.name, uidvalidity, opened.uid))
        addresses = Addresses(opened.name, opened.uid, token, allow)

        def keep(section: str, document: SafeHTML) -> None:
            key = DocumentKey(session.id, opened.name, uidvalidity, opened.uid, section, allow)
            self.frame_documents.put(key, document)

        lang = self.language(request)
        model = await shown(view, addresses, lang, keep)
        older, newer = neighbours(opened.folder.uids(), opened.uid)
        at = functools.partial(self.message_url, opened.name)
        return self.render_mail(
            request,
            session,
            "message.html",
            current=opened.name,
            m=model.message,
            blocked=model.blocked_remote and not allow,
            sender=sender,
            folder=opened.name,
            uid=opened.uid,
            ref=f"{opened.name}:{opened.uid}",
            list_url=archive_url(opened.name)
            if readonly
            else "/mail?" + urlencode({"folder": opened.name}),
            readonly=readonly,
            older_url=at(older) if older is not None else None,
            newer_url=at(newer) if newer is not None else None,
            images_url="/message?" + opened.query(images="1"),
            raw_url="/message/raw?" + opened.query(),
            mailboxes=mailboxes,
        )

    @staticmethod
    def message_url(folder: str, uid: int) -> str:
        """The page of one message."""
        return "/message?" + urlencode({"folder": folder, "uid": str(uid)})

    # -- the frame -----------------------------------------------------------------------------

    @app.route("/message/body", methods=["GET"])
    async def message_body(self, request: IRequest) -> bytes:
        session = self.user(request)
        opened = self.opened(request, session)
        section = self.form(request, "part", 200) or ""
        allow = self.form(request, "images", 1) == "1"
        uidvalidity = int(opened.folder.uidvalidity)
        key = DocumentKey(session.id, opened.name, uidvalidity, opened.uid, section, allow)
        document = self.frame_documents.take(key)
        if document is None:  # reloaded, or opened on its own: make it again
            view: MessageView = await deferToThread(build_view, self.buffer(opened))
            found = find_body(view, section)
            if found is None:
                raise Missing("part")
            token = self.part_grants.grant(Grant(session.id, opened.name, uidvalidity, opened.uid))
            document = await sanitised(
                found[0], found[1], Addresses(opened.name, opened.uid, token, allow)
            )
        for name, value in frame_headers(allow).items():
            request.setHeader(name.encode(), value.encode())
        # The webmail page (same origin) frames it; frame-ancestors 'self' says so for CSP.
        request.setHeader(b"X-Frame-Options", b"SAMEORIGIN")
        return frame_document(document).encode("utf-8")

    # -- parts and the source ------------------------------------------------------------------

    @app.route("/message/part", methods=["GET"])
    async def message_part(self, request: IRequest) -> bytes:
        token = self.form(request, "grant", 64)
        if token is not None:
            opened = self.granted(token)
            inline = True
        else:
            opened = self.opened(request, self.user(request))
            inline = self.form(request, "inline", 1) == "1"
        section = self.form(request, "part", 200) or ""
        part: PartDownload | None = await deferToThread(open_part, self.buffer(opened), section)
        if part is None or (token is not None and not part.inline_safe):
            raise Missing("part")
        kind = part.content_type if part.content_type in SAFE_TYPES else "application/octet-stream"
        request.setHeader(b"Content-Type", kind.encode())
        disposition = content_disposition(download_name(part), inline and part.inline_safe)
        request.setHeader(b"Content-Disposition", disposition.encode("ascii"))
        request.setHeader(b"Content-Security-Policy", PART_CSP)
        request.setHeader(b"Cache-Control", b"private, no-store")
        if token is not None:
            # Asked for by the sandboxed frame, an opaque origin: the unguessable grant is
            # the authorisation, so the response may cross to it (Fetch, CORP).
            request.setHeader(b"Cross-Origin-Resource-Policy", b"cross-origin")
        await stream(request, part.chunks())
        return b""

    def granted(self, token: str) -> Opened:
        """The message a frame's grant names, while its session lives."""
        grant = self.part_grants.get(token)
        # peek: an image the frame loads is not the user's activity.
        session = self.sessions.peek(grant.session_id) if grant is not None else None
        if grant is None or session is None:
            raise Missing("part")
        opened = self.find(session, grant.folder, grant.uid)
        if int(opened.folder.uidvalidity) != grant.uidvalidity:
            raise Missing("part")
        return opened

    @app.route("/message/raw", methods=["GET"])
    async def message_raw(self, request: IRequest) -> bytes:
        opened = self.opened(request, self.user(request))
        data = self.buffer(opened)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(
            b"Content-Disposition", f'inline; filename="message-{opened.uid}.txt"'.encode()
        )
        request.setHeader(b"Content-Security-Policy", PART_CSP)
        await stream(request, content.Span(data, 0, len(data)).chunks())
        return b""

    # -- remote images -------------------------------------------------------------------------

    @app.route("/message/images", methods=["POST"])
    async def always_show_images(self, request: IRequest) -> bytes:
        session = self.checked(request)
        opened = self.opened(request, session)
        data = self.buffer(opened)
        sender = remoteimages.verified_sender(
            bytes(data[: remoteimages.HEAD_LIMIT]), self.services.authserv_id
        )
        preferences = self.services.preferences
        _ = self.gettext(request)
        if sender is None or preferences is None:
            unverified = _("The sender of this message could not be verified.")
            return self.error(request, 400, unverified)
        chosen = remoteimages.with_sender(self.allowed_senders(session), sender)
        try:
            await preferences.set(session.address, remoteimages.SENDERS_KEY, chosen)
        except ValueError:
            return self.error(request, 400, _("Your settings are full; this choice was not kept."))
        return self.redirect(request, self.message_url(opened.name, opened.uid).encode())
