"""The message page's own model: a :class:`~ourmail.web.messageview.MessageView` with its
bodies made safe to show and the addresses of its parts.

Plain-text bodies become escaped HTML with links (:func:`~ourmail.web.plaintext.text_to_html`)
shown in the page itself.  HTML bodies are sanitised (:func:`~ourmail.web.sanitise.sanitise`)
and shown only in a sandboxed frame: the page gets the frame's address, and the sanitised
document is handed to the frame's request through :class:`~ourmail.web.frames.FrameDocuments`.
``cid:`` images (RFC 2392) point at ``/message/part`` with a grant
(:class:`~ourmail.web.frames.PartGrants`), since the frame's requests carry no session cookie.
Enclosed messages (``message/rfc822``) are shown in place, made the same way.
"""

from __future__ import annotations

import bisect
import datetime
from collections.abc import Callable, Iterator, Sequence
from typing import Literal
from urllib.parse import urlencode

import attrs
from babel.dates import format_datetime
from babel.numbers import format_decimal
from twisted.internet.threads import deferToThread

from ourmail.web.messageview import Attachment, Body, HeaderSummary, Mailbox, MessageView
from ourmail.web.safehtml import SafeHTML
from ourmail.web.sanitise import sanitise_in_thread, text_to_html

#: Characters of plain text turned into HTML in the reactor thread; longer text goes to a
#: worker thread.
SMALL_TEXT = 32 * 1024
#: HTML bodies of one message (its attached messages included) shown in frames, at most; the
#: others are offered as downloads.
MAX_FRAMES = 10
#: A sanitised HTML body shorter than this, without images or tables, gets a short frame.
SHORT_HTML = 1500


@attrs.frozen
class ShownBody:
    """One body: escaped text for the page, or the address of its sandboxed frame."""

    section: str
    #: ``hidden``: an HTML body past :data:`MAX_FRAMES`, offered as a download (``url``).
    kind: Literal["text", "frame", "hidden"]
    html: SafeHTML | None = None
    url: str = ""
    truncated: bool = False
    #: A frame whose document is a few lines of text: shown low, not 70 % of the window
    #: (the page cannot measure a sandboxed, foreign-origin frame).
    short: bool = False


@attrs.frozen
class ShownAttachment:
    """An attachment as listed: its download address and size in words, and the enclosed
    message of a message/rfc822 part."""

    attachment: Attachment
    url: str
    size: str
    message: ShownMessage | None = None


@attrs.frozen
class ShownMessage:
    """A message (the one opened, or one it encloses) ready for the template."""

    headers: HeaderSummary
    #: The Date in the reader's language, and as ISO 8601 for ``<time datetime>``.
    date: str
    date_iso: str
    bodies: tuple[ShownBody, ...]
    attachments: tuple[ShownAttachment, ...]
    raw: str | None = None
    truncated: bool = False


@attrs.frozen
class Shown:
    """The page's model and whether remote content was cut from any of its HTML bodies."""

    message: ShownMessage
    blocked_remote: bool


@attrs.frozen
class Addresses:
    """How to address one stored message's parts: its query, the frame's grant."""

    folder: str
    uid: int
    #: The token the frame's image URLs carry (:class:`~ourmail.web.frames.PartGrants`).
    grant: str
    allow_remote: bool

    def query(self, **more: str) -> str:
        """``folder=...&uid=...`` and ``more``, URL-encoded."""
        return urlencode({"folder": self.folder, "uid": str(self.uid), **more})

    def part(self, section: str) -> str:
        """Where the page downloads a part."""
        return "/message/part?" + self.query(part=section)

    def inline(self, section: str) -> str:
        """Where the frame loads an inline image (no cookie: the grant)."""
        return "/message/part?" + urlencode({"grant": self.grant, "part": section})

    def frame(self, section: str) -> str:
        """The frame document of an HTML body."""
        extra = {"images": "1"} if self.allow_remote else {}
        return "/message/body?" + self.query(part=section, **extra)


def size_text(size: int, lang: str) -> str:
    """A size for people: ``12 KB``, ``3,4 MB`` (decimal units, the reader's digits)."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{format_decimal(round(size / 1000), locale=lang)} KB"
    return f"{format_decimal(round(size / 1_000_000, 1), locale=lang)} MB"


def date_text(date: datetime.datetime | None, written: str, lang: str) -> tuple[str, str]:
    """The Date field in the reader's language (in the sender's time zone; the page's script
    shows it in the reader's), and ISO 8601; as written when it does not parse."""
    if date is None:
        return written, ""
    try:
        return format_datetime(date, "medium", tzinfo=date.tzinfo, locale=lang), date.isoformat()
    except (ValueError, OverflowError, LookupError):
        return written, ""


def mailboxes(boxes: tuple[Mailbox, ...]) -> str:
    """An address field as text: ``Name <address>, ...``."""
    return ", ".join(f"{b.name} <{b.address}>" if b.name else b.address for b in boxes)


def bodies(view: MessageView) -> Iterator[tuple[Body, MessageView]]:
    """Every body of a view and of the messages it encloses, with the view it belongs to."""
    for body in view.bodies:
        yield body, view
    for attachment in view.attachments:
        if attachment.message is not None:
            yield from bodies(attachment.message)


def find_body(view: MessageView, section: str) -> tuple[Body, MessageView] | None:
    """The HTML body numbered ``section`` and the (possibly enclosed) view it is in."""
    for body, owner in bodies(view):
        if body.section == section and body.kind == "html":
            return body, owner
    return None


def cid_map(view: MessageView, addresses: Addresses) -> Callable[[str], str | None]:
    """The sanitiser's ``cid`` function for a view: a plain dict lookup (it runs in a
    worker thread)."""
    urls = {cid: addresses.inline(section) for cid, section in view.inline_parts.items()}
    return urls.get


async def sanitised(body: Body, view: MessageView, addresses: Addresses) -> SafeHTML:
    """An HTML body of ``view`` sanitised for its frame (in a worker thread)."""
    assert body.html is not None
    return await sanitise_in_thread(
        body.html.source, allow_remote=addresses.allow_remote, cid=cid_map(view, addresses)
    )


async def shown(
    view: MessageView,
    addresses: Addresses,
    lang: str,
    keep: Callable[[str, SafeHTML], None],
) -> Shown:
    """The page's model of ``view``; each sanitised HTML body is passed to ``keep`` (its
    section and document) for the frame's request."""
    blocked = False
    frames = 0

    async def message(v: MessageView) -> ShownMessage:
        nonlocal blocked, frames
        shown_bodies = []
        for body in v.bodies:
            if body.kind == "html" and frames >= MAX_FRAMES:
                # Each frame's document is sanitised (and kept a while) for its request: a
                # message of hundreds of HTML parts must not cost hundreds of those.
                shown_bodies.append(
                    ShownBody(body.section, "hidden", url=addresses.part(body.section))
                )
            elif body.kind == "html":
                frames += 1
                safe = await sanitised(body, v, addresses)
                blocked = blocked or safe.blocked_remote
                keep(body.section, safe)
                shown_bodies.append(
                    ShownBody(body.section, "frame", url=addresses.frame(body.section),
                              truncated=body.truncated, short=_short(safe))
                )  # fmt: skip
            else:
                html = await _text_html(body)
                shown_bodies.append(ShownBody(body.section, "text", html, truncated=body.truncated))
        attachments = []
        for a in v.attachments:
            nested = await message(a.message) if a.message is not None else None
            attachments.append(
                ShownAttachment(a, addresses.part(a.section), size_text(a.size, lang), nested)
            )
        when, iso = date_text(v.headers.date, v.headers.date_text, lang)
        return ShownMessage(
            v.headers, when, iso, tuple(shown_bodies), tuple(attachments), v.raw, v.truncated
        )

    top = await message(view)
    return Shown(top, blocked)


def _short(safe: SafeHTML) -> bool:
    return len(safe.html) < SHORT_HTML and "<img" not in safe.html and "<table" not in safe.html


async def _text_html(body: Body) -> SafeHTML:
    if len(body.text) <= SMALL_TEXT:
        return text_to_html(body.text, flowed=body.flowed, delsp=body.delsp)
    result: SafeHTML = await deferToThread(
        text_to_html, body.text, flowed=body.flowed, delsp=body.delsp
    )
    return result


def neighbours(uids: Sequence[int], uid: int) -> tuple[int | None, int | None]:
    """The uids before and after ``uid`` in an ascending list: (older, newer)."""
    at = bisect.bisect_left(uids, uid)
    older = uids[at - 1] if at > 0 else None
    after = at + 1 if at < len(uids) and uids[at] == uid else at
    newer = uids[after] if after < len(uids) else None
    return older, newer
