"""Writing mail in the browser: the compose page, sending, drafts, attachments and address
completion (docs/webmail.md#writing-and-sending-mail).

Routes:

* ``GET /compose``: a new message; ``?reply=FOLDER:UID``, ``?all=`` (reply to all),
  ``?forward=`` (inline, attachments carried over), ``?forward_attached=`` (the message as
  an attachment) and ``?draft=`` (resume a draft) start from another message;
* ``POST /compose/send``: send under the submission rules (``ISubmission``), then flag the
  answered or forwarded message, delete the draft and the uploads; refusals are shown on
  the form, per recipient;
* ``POST /compose/draft``: save the form into the ``\\Drafts`` folder (the new copy first,
  then the old one expunged); JSON for the page's script, a page without it;
* ``POST /compose/discard``: delete the draft and the uploads;
* ``POST /compose/upload``: one attachment as the raw request body (its name in the
  ``X-Filename`` header, %-encoded UTF-8), streamed to disk; 413 over the limit;
* ``GET /compose/addresses?q=``: up to 10 completions (recent recipients, the directory).

A message is "sent" only once ``ISubmission.submit`` says every copy is durable.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from urllib.parse import unquote

import attrs
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ourmail.auth.login import Authenticator
from ourmail.interfaces import (
    DirectoryUnavailable,
    FolderExists,
    IFolder,
    IStoredMessage,
    IUserStore,
    NoSuchFolder,
    SubmissionRefusal,
    SubmissionResult,
)
from ourmail.mime import structure
from ourmail.web import replies, richtext
from ourmail.web.attachments import open_part
from ourmail.web.composeform import ComposeForm, address_of, parse_addresses
from ourmail.web.messageview import MessageView, build_view
from ourmail.web.mimebuild import Outgoing, Part, write_message
from ourmail.web.pages import Pages, WebServices
from ourmail.web.safehtml import SafeHTML
from ourmail.web.sessions import SessionStore, WebSession
from ourmail.web.settings import SIGNATURE_KEY
from ourmail.web.uploads import TooLarge, Upload, Uploads

log = Logger()

#: Completions answered at most, and the shortest query that gets any.
MAX_COMPLETIONS = 10
MIN_QUERY = 2
#: Recent recipients kept per user (``IPreferences`` key ``compose.recent``).
RECENT_KEY = "compose.recent"
MAX_RECENT = 50
#: Room left in a message for its header and text beside the attachments.
MESSAGE_OVERHEAD = 64 * 1024


def attachment_limit(max_message_size: int) -> int:
    """The most attachment bytes one message takes: base64 makes 4 octets of 3 (RFC 2045
    §6.8), and the message must stay within the SMTP size limit."""
    return max(0, (max_message_size - MESSAGE_OVERHEAD) * 3 // 4)


def parse_ref(value: str | None) -> tuple[str, int] | None:
    """``FOLDER:UID`` as (folder, uid); None when it is not that."""
    folder, _, uid = (value or "").rpartition(":")
    if not folder or not uid.isdigit() or len(uid) > 10:
        return None
    return folder, int(uid)


def special_folder(user: IUserStore, use: str, default: str) -> str:
    """The user's folder of an RFC 6154 special use, made as ``default`` when missing."""
    for name, found in user.special_uses().items():
        if found == use:
            return name
    with contextlib.suppress(FolderExists):  # made meanwhile, or there without the attribute
        user.create_folder(default, use)
    return default


def _read(data: structure.Buffer) -> tuple[MessageView, structure.Part]:
    """A stored message's view and header part (in a thread)."""
    crlf = structure.to_crlf(data) if isinstance(data, bytes) else data
    return build_view(crlf), structure.parse(crlf)


def _without(form: ComposeForm, sent: set[str]) -> ComposeForm:
    """``form`` without the recipients in ``sent`` (lower-case addresses), each other
    recipient left in its own field (a Bcc stays a Bcc)."""

    def kept(field: str) -> str:
        good, bad = parse_addresses(field)
        return ", ".join([*(a for a in good if address_of(a).lower() not in sent), *bad])

    return attrs.evolve(form, to=kept(form.to), cc=kept(form.cc), bcc=kept(form.bcc))


def _slices(data: structure.Buffer, size: int = 1 << 16) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield bytes(data[at : at + size])


def _json(request: IRequest, value: object, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


class ComposePages(Pages):
    """The compose routes (see the module's docstring)."""

    app = Pages.app

    def __init__(
        self,
        authenticator: Authenticator,
        sessions: SessionStore,
        services: WebServices | None = None,
    ) -> None:
        super().__init__(authenticator, sessions, services)
        root = self.services.upload_dir
        self.uploads = Uploads(root) if root is not None else None
        if self.uploads is not None:
            self.uploads.clear()  # left by a stopped process: no session outlives it
            sessions.on_end.append(self._session_ended)

    def _session_ended(self, session: WebSession) -> None:
        if self.uploads is not None:
            deferToThread(self.uploads.end, session.id).addErrback(
                lambda f: log.failure("could not delete a session's uploads", f)
            )

    # -- the page ----------------------------------------------------------------------------

    def identities(self, session: WebSession) -> list[str]:
        """The addresses the user may send as, their own first."""
        directory = self.services.directory
        return directory.identities(session.address) if directory else [session.address]

    def _page(
        self,
        request: IRequest,
        session: WebSession,
        form: ComposeForm,
        attachments: list[Upload],
        code: int = 200,
        errors: list[str] | None = None,
        notice: str = "",
    ) -> bytes:
        return self.render_mail(
            request,
            session,
            "compose.html",
            code,
            current=None,
            form=form,
            rich=SafeHTML(richtext.clean(form.html)) if form.html else "",
            identities=self.identities(session),
            attachments=attachments,
            errors=errors or [],
            notice=notice,
            can_upload=self.uploads is not None,
            max_attachments=attachment_limit(self.services.max_message_size),
        )

    @app.route("/compose", methods=["GET"])
    async def compose(self, request: IRequest) -> bytes:
        session = self.user(request)
        _ = self.gettext(request)
        for mode in ("reply", "all", "forward", "forward_attached", "draft"):
            value = self.form(request, mode)
            if value is not None:
                break
        else:
            text = self._signed(session, "")
            return self._page(request, session, ComposeForm(from_=session.address, text=text), [])
        ref = parse_ref(value)
        found = self._message(session, ref)
        try:
            data = found.buffer() if found is not None else None
        except KeyError:  # expunged since
            data = None
        if ref is None or data is None:
            return self.error(request, 404, _("That message no longer exists."))
        view, header = await deferToThread(_read, data)
        attachments: list[Upload] = []
        # Quoting turns up to a megabyte of HTML into text: off the reactor.
        if mode in ("reply", "all"):
            mine = self.identities(session)
            prefill = await deferToThread(
                replies.reply, view, header, mine, mode == "all", value, _
            )
        elif mode == "forward_attached":
            prefill = await deferToThread(replies.forward, view, False, value, _)
            attachments = await self._carry(session, [(_slices(data), view.headers.subject)])
        else:
            if mode == "draft":
                prefill = await deferToThread(replies.resumed, view, header)
            else:
                prefill = await deferToThread(replies.forward, view, True, value, _)
            attachments = await self._carry_parts(session, view, data)
        form = ComposeForm(
            from_=prefill.from_ or session.address,
            to=prefill.to,
            cc=prefill.cc,
            bcc=prefill.bcc,
            subject=prefill.subject,
            # A draft has its signature already; a rich text draft is resumed as it was.
            text=prefill.text
            if mode == "draft" or prefill.html
            else self._signed(session, prefill.text),
            html=prefill.html,
            draft=value if mode == "draft" else "",
            origin=prefill.origin,
            in_reply_to=prefill.in_reply_to,
            references=prefill.references,
            attachments=tuple(u.id for u in attachments),
        )
        return self._page(request, session, form, attachments)

    def _signed(self, session: WebSession, text: str) -> str:
        """``text`` (empty, or a quote with room above it) with the user's signature (set on
        the settings page) where they start writing: after the ``-- `` line of RFC 3676
        §4.3, above what they answer or forward."""
        prefs = self.services.preferences
        signature = prefs.get(session.address, SIGNATURE_KEY) if prefs is not None else None
        if not isinstance(signature, str) or not signature.strip():
            return text
        rest = text.lstrip("\n")
        return f"\n\n-- \n{signature.rstrip()}\n" + (f"\n{rest}" if rest else "")

    def _message(self, session: WebSession, ref: tuple[str, int] | None) -> IStoredMessage | None:
        """The stored message ``ref`` names, or None."""
        if ref is None:
            return None
        try:
            folder: IFolder = session.login.avatar.folder(ref[0])
            folder.sync()
            message: IStoredMessage = folder.message(ref[1])
        except (NoSuchFolder, KeyError):
            return None
        return message

    async def _carry(
        self, session: WebSession, messages: list[tuple[Iterator[bytes], str]]
    ) -> list[Upload]:
        """Whole messages as ``message/rfc822`` uploads (a forward as attachment)."""
        if self.uploads is None:
            return []
        out = []
        for chunks, subject in messages:
            name = (subject or "message")[:80] + ".eml"
            out.append(
                await deferToThread(
                    self.uploads.add_bytes, session.id, chunks, name, "message/rfc822"
                )
            )
        return out

    async def _carry_parts(
        self, session: WebSession, view: MessageView, data: structure.Buffer
    ) -> list[Upload]:
        """The message's attachments as uploads of this session (forward, draft)."""
        if self.uploads is None:
            return []
        out = []
        for attachment in view.attachments:
            part = open_part(data, attachment.section)
            if part is None:
                continue
            upload = await deferToThread(
                self.uploads.add_bytes,
                session.id,
                part.chunks(),
                attachment.filename,
                attachment.content_type,
            )
            out.append(upload)
        return out

    # -- send, save, discard -----------------------------------------------------------------

    def _form(self, request: IRequest) -> ComposeForm:
        return ComposeForm.read(
            lambda name, limit: self.form(request, name, limit),
            lambda name: self.form_list(request, name, 40, 200),
        )

    async def _attachments(
        self, request: IRequest, session: WebSession, form: ComposeForm
    ) -> tuple[list[Upload], list[str]]:
        """The form's kept uploads, plus files posted in the form itself (a browser without
        script), and errors."""
        _ = self.gettext(request)
        if self.uploads is None:
            return [], []
        uploads = self.uploads
        kept = [u for u in [uploads.get(session.id, i) for i in form.attachments] if u]
        errors: list[str] = []
        kind = request.getHeader("content-type") or ""
        if kind.lower().startswith("multipart/form-data") and request.content is not None:
            limit = attachment_limit(self.services.max_message_size)
            try:
                kept += await deferToThread(self._form_files, session.id, request, kind, limit)
            except TooLarge:
                errors.append(_("The attachments are too large to send together."))
        return kept, errors

    def _form_files(
        self, session_id: str, request: IRequest, kind: str, limit: int
    ) -> list[Upload]:
        """The files of a multipart form (bounded by the route's body limit), in a thread."""
        assert self.uploads is not None and request.content is not None
        request.content.seek(0)
        body = request.content.read()
        parsed = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + kind.encode("latin-1") + b"\r\n\r\n" + body
        )
        out = []
        for part in parsed.iter_parts():
            filename = part.get_filename()
            if part.get_param("name", header="content-disposition") != "file" or not filename:
                continue
            content = part.get_payload(decode=True)
            if not isinstance(content, bytes) or not content:
                continue
            used = sum(u.size for u in self.uploads.all(session_id))
            upload = self.uploads.add(
                session_id, io.BytesIO(content), filename, part.get_content_type(), limit
            )
            if used + upload.size > limit:
                self.uploads.remove(session_id, [upload.id])
                raise TooLarge()
            out.append(upload)
        return out

    def _outgoing(
        self, session: WebSession, form: ComposeForm, attachments: list[Upload], draft: bool
    ) -> tuple[Outgoing, list[str]]:
        """The message to write, and its envelope recipients; raises ValueError with the
        pieces that are no address."""
        to, bad_to = parse_addresses(form.to)
        cc, bad_cc = parse_addresses(form.cc)
        bcc, bad_bcc = parse_addresses(form.bcc)
        bad = bad_to + bad_cc + bad_bcc
        if bad:
            raise ValueError(bad)
        assert self.uploads is not None or not attachments
        parts = [
            Part(self.uploads.path(session.id, u), u.filename, u.content_type)
            for u in attachments
            if self.uploads is not None
        ]
        markup = richtext.clean(form.html) if form.html else ""
        outgoing = Outgoing(
            from_=form.from_,
            to=to,
            cc=cc,
            bcc=bcc,
            subject=form.subject,
            text=richtext.to_plain(markup) if markup else form.text,
            html=richtext.document(markup) if markup else "",
            in_reply_to=form.in_reply_to,
            references=form.references,
            attachments=parts,
            draft=draft,
            origin=form.origin,
        )
        envelope = list(dict.fromkeys(address_of(a) for a in [*to, *cc, *bcc]))
        return outgoing, envelope

    async def _write(self, session: WebSession, outgoing: Outgoing) -> Path:
        """The message in a file of the session's folder (the caller removes it)."""
        assert self.uploads is not None
        path = self.uploads.scratch(session.id)

        def write() -> None:
            with open(path, "wb") as out:
                write_message(out, outgoing, self.hostname(session))

        await deferToThread(write)
        return path

    def hostname(self, session: WebSession) -> str:
        """The right-hand side of Message-IDs: the user's domain."""
        return session.address.rpartition("@")[2] or "localhost"

    @app.route("/compose/send", methods=["POST"])
    async def send(self, request: IRequest) -> bytes:
        session = self.checked(request)
        _ = self.gettext(request)
        form = self._form(request)
        attachments, errors = await self._attachments(request, session, form)
        form = _with_attachments(form, attachments)
        submission = self.services.submission
        if submission is None or self.uploads is None:
            return self.error(request, 503, _("Sending mail is not available on this server."))
        if form.from_ not in self.identities(session):
            errors.append(_("You may not send as %(address)s.") % {"address": form.from_})
        try:
            outgoing, envelope = await deferToThread(
                self._outgoing, session, form, attachments, False
            )
        except ValueError as e:
            bad = ", ".join(e.args[0])
            errors.append(_("These are not e-mail addresses: %(bad)s") % {"bad": bad})
            envelope = []
        if not envelope and not errors:
            errors.append(_("Add at least one recipient."))
        if errors:
            return self._page(request, session, form, attachments, 400, errors)
        client = str(getattr(request.getClientAddress(), "host", ""))
        try:
            path = await self._write(session, outgoing)
            try:
                result: SubmissionResult = await submission.submit(
                    session.address, address_of(form.from_), envelope, path, client
                )
            finally:
                await deferToThread(path.unlink, True)
        except Exception:  # the disk, the store: nothing was acknowledged, the form stays
            log.failure("sending {user}'s message from the web failed", user=session.address)
            errors = [_("The message could not be sent. Please try again later.")]
            return self._page(request, session, form, attachments, 503, errors)
        if not result.sent:
            errors = [self._refusal_text(request, r) for r in result.refusals]
            code = 503 if all(r.code < 500 for r in result.refusals) else 400
            if result.delivered:
                # It went out to some: the form keeps only the others, so that sending it
                # again reaches them and nobody twice.
                errors.insert(
                    0,
                    _("The message was sent to %(sent)s, but not to the addresses below.")
                    % {"sent": ", ".join(result.delivered)},
                )
                form = _without(form, {a.lower() for a in result.delivered})
                await self._remember(session.address, list(result.delivered))
            return self._page(request, session, form, attachments, code, errors)
        await self._after_sent(session, form, envelope)
        return self.redirect(request, b"/compose/sent")

    def _refusal_text(self, request: IRequest, refusal: SubmissionRefusal) -> str:
        """A refusal as the user reads it, with the server's reply for the record."""
        _ = self.gettext(request)
        detail = f"{refusal.code} {refusal.status} {refusal.text}"
        if refusal.reason == "sender":
            text = _("You may not send as this address.")
        elif refusal.reason == "rate":
            text = _("You have reached your hourly sending limit. Please try again later.")
        elif refusal.reason == "size":
            text = _("The message is too large to send.")
        elif refusal.reason == "recipient" and refusal.address:
            text = _("%(address)s cannot receive this message.") % {"address": refusal.address}
        elif refusal.reason == "content":
            text = _("The message was refused by the server's checks.")
        else:
            text = _("The message could not be sent. Please try again later.")
        return f"{text} ({detail})"

    async def _after_sent(
        self, session: WebSession, form: ComposeForm, envelope: list[str]
    ) -> None:
        """Flag the message answered or forwarded, drop the draft and the uploads, remember
        the recipients.  Each step's failure is logged: the message is sent already."""
        mode, _, ref_text = form.origin.partition(" ")
        ref = parse_ref(ref_text)
        try:
            message = self._message(session, ref)
            if ref is not None and message is not None and mode in ("reply", "forward"):
                flag = "\\Answered" if mode == "reply" else "$Forwarded"
                folder: IFolder = session.login.avatar.folder(ref[0])
                folder.store_flags([ref[1]], [flag], "+")
        except Exception:
            log.failure("could not flag the original of {user}'s message", user=session.address)
        try:
            self._drop_draft(session, form.draft)
        except Exception:
            log.failure("could not drop the draft of {user}'s message", user=session.address)
        assert self.uploads is not None
        try:
            await deferToThread(self.uploads.remove, session.id, form.attachments)
        except Exception:
            log.failure("could not remove the uploads of {user}", user=session.address)
        await self._remember(session.address, envelope)

    async def _remember(self, user: str, envelope: list[str]) -> None:
        prefs = self.services.preferences
        if prefs is None:
            return
        old = prefs.get(user, RECENT_KEY)
        known = [a for a in old if isinstance(a, str)] if isinstance(old, list) else []
        recent = list(dict.fromkeys([*envelope, *known]))[:MAX_RECENT]
        try:
            await prefs.set(user, RECENT_KEY, recent)
        except ValueError:
            log.warn("could not keep {user}'s recent recipients", user=user)

    def _drop_draft(self, session: WebSession, draft: str) -> None:
        """Expunge the saved draft ``FOLDER:UID``, only ever from the Drafts folder."""
        ref = parse_ref(draft)
        user = session.login.avatar
        if ref is None or ref[0] != special_folder(user, "\\Drafts", "Drafts"):
            return
        try:
            folder = user.folder(ref[0])
            folder.sync()
            folder.expunge([ref[1]])
        except NoSuchFolder:
            pass

    @app.route("/compose/draft", methods=["POST"])
    async def save_draft(self, request: IRequest) -> bytes:
        session = self.checked(request)
        _ = self.gettext(request)
        wants_json = "application/json" in (request.getHeader("accept") or "")
        form = self._form(request)
        attachments, errors = await self._attachments(request, session, form)
        form = _with_attachments(form, attachments)
        if self.uploads is None:
            return self.error(request, 503, _("Drafts are not available on this server."))
        try:
            outgoing, _envelope = await deferToThread(
                self._outgoing, session, form, attachments, True
            )
        except ValueError as e:
            bad = ", ".join(e.args[0])
            errors.append(_("These are not e-mail addresses: %(bad)s") % {"bad": bad})
        if errors:
            if wants_json:
                return _json(request, {"error": " ".join(errors)}, 400)
            return self._page(request, session, form, attachments, 400, errors)
        user = session.login.avatar
        name = special_folder(user, "\\Drafts", "Drafts")
        try:
            path = await self._write(session, outgoing)
            try:
                folder = user.folder(name)
                uid = await folder.append(path, ["\\Draft", "\\Seen"])  # durable first
            finally:
                await deferToThread(path.unlink, True)
        except Exception:  # the disk, the store, the quota: the form stays as it is
            log.failure("saving {user}'s draft failed", user=session.address)
            failed = _("The draft could not be saved. Please try again later.")
            if wants_json:
                return _json(request, {"error": failed}, 503)
            return self._page(request, session, form, attachments, 503, [failed])
        self._drop_draft(session, form.draft)  # then the old copy goes
        draft = f"{name}:{uid}"
        if wants_json:
            return _json(request, {"draft": draft})
        saved = attrs.evolve(form, draft=draft)
        return self._page(request, session, saved, attachments, notice=_("Draft saved."))

    @app.route("/compose/discard", methods=["POST"])
    async def discard(self, request: IRequest) -> bytes:
        session = self.checked(request)
        form = self._form(request)
        self._drop_draft(session, form.draft)
        if self.uploads is not None:
            await deferToThread(self.uploads.remove, session.id, form.attachments)
        return self.redirect(request, b"/")

    @app.route("/compose/sent", methods=["GET"])
    def sent(self, request: IRequest) -> bytes:
        session = self.user(request)
        return self.render_mail(request, session, "sent.html", current=None)

    # -- attachments and completion ------------------------------------------------------------

    @app.route("/compose/upload", methods=["POST"])
    async def upload(self, request: IRequest) -> bytes:
        session = self.checked(request)
        _ = self.gettext(request)
        if self.uploads is None or request.content is None:
            return _json(request, {"error": _("Attachments are not available.")}, 503)
        name = unquote(request.getHeader("x-filename") or "", errors="replace")
        kind = request.getHeader("content-type")
        limit = attachment_limit(self.services.max_message_size)
        request.content.seek(0)
        try:
            upload = await deferToThread(
                self.uploads.add, session.id, request.content, name, kind, limit
            )
        except TooLarge:
            message = _("The attachments are too large to send together.")
            return _json(request, {"error": message}, 413)
        return _json(
            request,
            {
                "id": upload.id,
                "filename": upload.filename,
                "content_type": upload.content_type,
                "size": upload.size,
            },
        )

    @app.route("/compose/addresses", methods=["GET"])
    async def addresses(self, request: IRequest) -> bytes:
        session = self.user(request)
        query = " ".join((self.form(request, "q", 400) or "").split()).lower()
        if len(query) < MIN_QUERY:
            return _json(request, [])
        found: dict[str, str] = {}
        prefs = self.services.preferences
        recent = prefs.get(session.address, RECENT_KEY) if prefs else None
        for address in recent if isinstance(recent, list) else []:
            if isinstance(address, str) and query in address.lower():
                found.setdefault(address_of(address) or address, "")
        directory = self.services.directory
        if directory is not None and len(found) < MAX_COMPLETIONS:
            try:
                for contact in await directory.search(query, MAX_COMPLETIONS):
                    found.setdefault(contact.address, contact.name)
            except DirectoryUnavailable:
                pass
        rows = [{"address": a, "name": n} for a, n in found.items()][:MAX_COMPLETIONS]
        return _json(request, rows)


def _with_attachments(form: ComposeForm, attachments: list[Upload]) -> ComposeForm:
    return attrs.evolve(form, attachments=tuple(u.id for u in attachments))
