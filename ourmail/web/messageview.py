"""A message as the browser will show it: plain data built from the stored octets.

:func:`build_view` reads a message (CRLF octets, as ``IStoredMessage.buffer()`` gives them)
into a :class:`MessageView`: the header summary (RFC 5322 §3.6 fields, RFC 2047 words and
RFC 6532 UTF-8 decoded, addresses as display name and address), the bodies to show, the
attachments with safe names, the inline parts by Content-ID for ``cid:`` URLs (RFC 2392), and
enclosed messages (``message/rfc822``) as nested views.  The part tree comes from
:mod:`ourmail.mime.structure` (offsets only, no copy), so a 10 MB message costs a scan for its
boundaries plus the decoding of its text parts.

An HTML body is returned as :class:`UnsafeHTML`: the sender's markup, not yet sanitised.  It
must go through ``ourmail.web.sanitise`` before any page shows it.  Plain text is text, to be
escaped by the template (Jinja2 autoescape) like any other value.

Limits (bounded work on hostile input):

- ``structure.MAX_PARTS`` (1000) parts and ``structure.MAX_DEPTH`` (20) levels are parsed;
  what lies beyond is one opaque part, and the view says ``truncated``.
- At most ``Limits.max_nested`` (3) levels of enclosed messages are shown as views; deeper
  ones are listed as ``.eml`` attachments only.
- At most ``Limits.max_text`` (1 MiB) of each body (``Limits.max_html``, 256 KiB, of an HTML
  body) and ``Limits.max_total_text`` (4 MiB) of
  all bodies together are decoded; the rest is cut (``Body.truncated``).
- At most ``Limits.max_attachments`` (500) attachments are listed, ``Limits.max_header``
  (16 Ki) characters of a header field read, ``Limits.max_addresses`` (1000) addresses of an
  address field listed.
- A message that cannot be read at all is shown raw: its first ``Limits.max_text`` octets as
  text (``MessageView.raw``), never an error.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from collections.abc import Iterator, Mapping
from typing import Literal
from urllib.parse import unquote

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from ourmail.interfaces import IStoredMessage
from ourmail.mime import content, structure
from ourmail.web.attachments import PartInfo, describe, safe_filename
from ourmail.web.charsets import DEFAULT_FALLBACK, decode_text, header_text

log = Logger()


@attrs.frozen
class Limits:
    """Bounds on the work one view costs; see the module's documentation."""

    max_text: int = 1024 * 1024
    #: Of an HTML body: the sanitiser needs about half a second a megabyte, and no reader
    #: scrolls through more (Gmail clips at about 100 KB); the rest is a download away.
    max_html: int = 256 * 1024
    max_total_text: int = 4 * 1024 * 1024
    max_nested: int = 3
    max_attachments: int = 500
    #: Characters of one header field read, and addresses of one address field listed.
    max_header: int = 16 * 1024
    max_addresses: int = 1000
    #: The charset for octets whose declared charset is unknown, lying, or missing: WHATWG's
    #: Windows-1252 by default; "windows-1253" suits a Greek deployment.
    fallback_charset: str = DEFAULT_FALLBACK


@attrs.frozen
class Mailbox:
    """One address of an address field: the decoded display name ("" if none) and address."""

    name: str
    address: str


@attrs.frozen
class HeaderSummary:
    """The header fields a reader sees (RFC 5322 §3.6), decoded to text."""

    subject: str = ""
    from_: tuple[Mailbox, ...] = ()
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    #: The Date field parsed (RFC 5322 §3.3), timezone-aware; None if absent or unreadable.
    date: datetime.datetime | None = None
    #: The Date field as written, for when it does not parse.
    date_text: str = ""
    message_id: str = ""


@attrs.frozen
class UnsafeHTML:
    """HTML exactly as the sender wrote it (decoded to text): unsafe until sanitised.

    It has no ``__html__``, so Jinja2 escapes it if it is ever put in a page by mistake."""

    source: str


@attrs.frozen
class Body:
    """One body part to show: plain text, or HTML still to be sanitised."""

    #: The IMAP part number (RFC 3501 §6.4.5) of the part shown.
    section: str
    kind: Literal["plain", "html"]
    #: The text of a plain body; "" for an HTML one.
    text: str = ""
    #: The markup of an HTML body; None for a plain one.
    html: UnsafeHTML | None = None
    #: The codec the octets were decoded with, and the charset the part declared.
    charset: str = "utf-8"
    declared_charset: str | None = None
    #: RFC 3676 format=flowed (and DelSp=yes): the text's soft line breaks may be rewrapped.
    flowed: bool = False
    delsp: bool = False
    #: Whether only the first ``Limits.max_text`` octets were decoded.
    truncated: bool = False


@attrs.frozen
class Attachment:
    """A part offered for download (or shown in place, for an inline image)."""

    section: str
    #: Safe to save and to put in Content-Disposition (:mod:`ourmail.web.attachments`).
    filename: str
    content_type: str
    #: Decoded size in octets: exact for 7bit/8bit/binary, within two octets for base64, the
    #: encoded size (an upper bound) for quoted-printable.
    size: int
    content_id: str | None = None
    #: Whether the part is meant to be shown in the message (Content-Disposition inline, or a
    #: resource of a multipart/related) rather than only offered for download.
    inline: bool = False
    #: The enclosed message of a message/rfc822 part, as a view; None when too deep.
    message: MessageView | None = None


@attrs.frozen
class MessageView:
    """A message ready to be shown: see the module's documentation."""

    headers: HeaderSummary
    bodies: tuple[Body, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    #: Content-ID (without angle brackets) -> part number, for ``cid:`` URLs (RFC 2392).
    inline_parts: Mapping[str, str] = attrs.field(factory=dict)
    #: The message as text when it could not be read as MIME; None otherwise.
    raw: str | None = None
    #: Whether a limit cut the view short (parts, depth, attachments or text).
    truncated: bool = False

    def cid_section(self, url: str) -> str | None:
        """The part number a ``cid:`` URL names (RFC 2392 §2: the URL is the Content-ID,
        %-encoded, without angle brackets), or None."""
        if url[:4].lower() != "cid:":
            return None
        return self.inline_parts.get(unquote(url[4:]).strip().strip("<>"))


def view_of(message: IStoredMessage, limits: Limits | None = None) -> Deferred[MessageView]:
    """The view of a stored message, built in a worker thread (a 10 MB message takes tens of
    milliseconds of CPU, which the reactor should not wait for).  KeyError, at once, if the
    message is gone (:meth:`IStoredMessage.buffer`)."""
    data = message.buffer()
    return deferToThread(build_view, data, limits)


def build_view(data: structure.Buffer, limits: Limits | None = None) -> MessageView:
    """The view of a whole message (``data`` with CRLF line endings; bare LF is accepted and
    normalised).  Never raises: what cannot be read is shown raw."""
    limits = limits or Limits()
    try:
        if isinstance(data, bytes):
            data = structure.to_crlf(data)
        root = structure.parse(data)
        builder = _Builder(data, limits, _count(root) >= structure.MAX_PARTS)
        return builder.message(root, "", 0)
    except Exception:  # a parser bug must not cost the reader the message: show it raw
        log.failure("message view failed; showing the message raw")
        return raw_view(data, limits)


def raw_view(data: structure.Buffer, limits: Limits | None = None) -> MessageView:
    """The message as text (its first ``max_text`` octets), for one that cannot be read."""
    limits = limits or Limits()
    head = bytes(data[: limits.max_text])
    text = decode_text(head, None, limits.fallback_charset)[0]
    return MessageView(HeaderSummary(), raw=text, truncated=len(data) > limits.max_text)


def _count(part: structure.Part) -> int:
    n, todo = 0, [part]
    while todo:
        p = todo.pop()
        n += 1
        todo.extend(p.children)
        if p.embedded is not None:
            todo.append(p.embedded)
    return n


def _join(prefix: str, n: int) -> str:
    return f"{prefix}.{n}" if prefix else str(n)


class _Builder:
    """One view's construction: the shared text budget and limits."""

    def __init__(self, data: structure.Buffer, limits: Limits, truncated: bool) -> None:
        self.data = data
        self.limits = limits
        self.text_left = limits.max_total_text
        self.truncated = truncated

    # -- a message (the root, or one enclosed by message/rfc822) ------------------------------

    def message(self, root: structure.Part, prefix: str, depth: int) -> MessageView:
        """The view of ``root``, whose parts are numbered under ``prefix``."""
        hint = self._text_charset(root)
        headers = self.headers(root, hint)
        bodies: list[Body] = []
        attachments: list[Attachment] = []
        inline: dict[str, str] = {}
        for section, part, role in self._walk(root, prefix):
            if role != "body" and len(attachments) >= self.limits.max_attachments:
                self.truncated = True  # not even read: the list is full
                continue
            info = describe(part, section, hint, self.limits.fallback_charset)
            if info.content_id and part.maintype != "multipart":
                inline.setdefault(info.content_id, section)
            if role == "body":
                bodies.append(self.body(part, section, info))
            else:
                attachments.append(self.attachment(part, section, info, role, depth))
        return MessageView(
            headers,
            tuple(bodies),
            tuple(attachments),
            inline,
            truncated=self.truncated or any(b.truncated for b in bodies),
        )

    def headers(self, part: structure.Part, hint: str | None) -> HeaderSummary:
        """The decoded header summary of a message part."""
        fb = self.limits.fallback_charset

        cap = self.limits.max_header

        def text(name: str) -> str:
            value = part.header(name)
            return header_text(value[:cap], hint, fb) if value else ""

        def addresses(name: str) -> tuple[Mailbox, ...]:
            # Every field of that name (a message may repeat To), unfolded (RFC 5322 §2.2.3).
            values = [
                raw.split(b":", 1)[1][:cap].replace(b"\r\n", b"").decode("utf-8", "surrogateescape")
                for f, raw in part.fields
                if f == name
            ]
            found = [(n, a) for n, a in email.utils.getaddresses(values) if n or a]
            if len(found) > self.limits.max_addresses:
                found = found[: self.limits.max_addresses]
                self.truncated = True
            return tuple(
                Mailbox(header_text(n, hint, fb), header_text(a, hint, fb)) for n, a in found
            )

        date_text = text("date")
        try:
            date: datetime.datetime | None = email.utils.parsedate_to_datetime(date_text)
        except (TypeError, ValueError, IndexError, OverflowError):
            date = None
        if date is not None and date.tzinfo is None:  # RFC 5322 §3.3 "-0000": zone unknown
            date = date.replace(tzinfo=datetime.UTC)
        return HeaderSummary(
            subject=text("subject"),
            from_=addresses("from"),
            to=addresses("to"),
            cc=addresses("cc"),
            reply_to=addresses("reply-to"),
            date=date,
            date_text=date_text,
            message_id=text("message-id"),
        )

    # -- choosing what to show ---------------------------------------------------------------

    def _walk(
        self, root: structure.Part, prefix: str
    ) -> Iterator[tuple[str, structure.Part, Literal["body", "attachment", "related"]]]:
        """Every leaf part under ``root`` with its number and role: a body to show, an
        attachment, or a resource of a multipart/related body (an inline image)."""
        if root.maintype != "multipart":
            yield _join(prefix, 1), root, self._leaf_role(root)
        elif not root.children:  # no delimiter line: the body is shown as text
            yield _join(prefix, 1), root, "body"
        else:
            yield from self._parts(root, prefix)

    def _parts(
        self, part: structure.Part, section: str
    ) -> Iterator[tuple[str, structure.Part, Literal["body", "attachment", "related"]]]:
        children = [(_join(section, i), c) for i, c in enumerate(part.children, 1)]
        if part.subtype == "alternative" and children:
            # RFC 2046 §5.1.4: the alternatives are in increasing order of preference; show
            # the last one we can show, preferring HTML, and offer none of the others.
            chosen = self._choose_alternative(children)
            for s, c in children:
                if (s, c) == chosen:
                    yield from self._descend(c, s)
            return
        if part.subtype == "related" and children:
            # RFC 2387 §3.1-3.2: the root is the part the start parameter names, else the
            # first; the others are resources it refers to (by Content-ID).
            start = part.params.get("start", "").strip().strip("<>")
            root = next(
                (sc for sc in children if start and _cid(sc[1]) == start),
                children[0],
            )
            yield from self._descend(root[1], root[0])
            for s, c in children:
                if (s, c) != root:
                    for leaf_section, leaf, _role in self._descend(c, s):
                        yield leaf_section, leaf, "related"
            return
        for s, c in children:  # mixed, and any other multipart (RFC 2046 §5.1.7)
            yield from self._descend(c, s)

    def _descend(
        self, part: structure.Part, section: str
    ) -> Iterator[tuple[str, structure.Part, Literal["body", "attachment", "related"]]]:
        if part.maintype == "multipart" and part.children:
            yield from self._parts(part, section)
        elif part.maintype == "multipart":  # no delimiter line: its body, as stored
            yield section, part, "attachment"
        else:
            yield section, part, self._leaf_role(part)

    def _choose_alternative(
        self, children: list[tuple[str, structure.Part]]
    ) -> tuple[str, structure.Part]:
        def kind(part: structure.Part) -> str | None:
            if part.maintype == "multipart" and part.children:
                # A multipart/related (or mixed) alternative shows its first child's kind.
                return kind(part.children[0])
            if part.maintype == "text" and part.subtype in ("html", "plain"):
                return part.subtype
            return None

        for wanted in ("html", "plain"):
            for sc in reversed(children):
                if kind(sc[1]) == wanted:
                    return sc
        return children[-1]

    def _leaf_role(self, part: structure.Part) -> Literal["body", "attachment"]:
        """A text/plain or text/html part is a body to show unless it is marked as an
        attachment or named (RFC 2183 §2.1-2.3), so each text of Apple Mail's text, image,
        text shape is shown in order; any other part is an attachment."""
        if part.maintype != "text" or part.subtype not in ("plain", "html"):
            return "attachment"
        disposition = part.header("content-disposition") or ""
        kind = disposition.split(";", 1)[0].strip().lower()
        named = "filename" in disposition.lower() or "name" in part.params
        return "attachment" if kind == "attachment" or named else "body"

    # -- the pieces --------------------------------------------------------------------------

    def _text_charset(self, root: structure.Part) -> str | None:
        """The charset of the message's first text part: the best guess for raw 8-bit octets
        in its header fields."""
        todo = [root]
        while todo:
            part = todo.pop(0)
            if part.maintype == "text" and "charset" in part.params:
                return part.params["charset"]
            todo.extend(part.children[:20])
        return None

    def body(self, part: structure.Part, section: str, info: PartInfo) -> Body:
        """A text part decoded within the text budget."""
        most = self.limits.max_html if part.subtype == "html" else self.limits.max_text
        budget = max(0, min(most, self.text_left))
        octets, cut = self._read(part, budget)
        self.text_left -= len(octets)
        declared = info.charset
        if part.subtype == "html" and not declared:
            declared = _meta_charset(octets)
        text, codec = decode_text(octets, declared, self.limits.fallback_charset)
        text = text.replace("\r\n", "\n")
        if part.subtype == "html":
            return Body(
                section, "html", html=UnsafeHTML(text), charset=codec,
                declared_charset=info.charset, truncated=cut,
            )  # fmt: skip
        return Body(
            section, "plain", text=text, charset=codec, declared_charset=info.charset,
            flowed=info.flowed, delsp=info.delsp, truncated=cut,
        )  # fmt: skip

    def _read(self, part: structure.Part, budget: int) -> tuple[bytes, bool]:
        """At most ``budget`` decoded octets of a part, and whether there was more."""
        raw = content.Span(self.data, part.body_start, part.end)
        try:
            decoded = content.decoded(raw, part.header("content-transfer-encoding"))
        except content.UnknownCTE:
            decoded = raw
        pieces: list[bytes] = []
        size = 0
        for chunk in decoded.chunks():
            pieces.append(chunk)
            size += len(chunk)
            if size > budget:
                return b"".join(pieces)[:budget], True
        return b"".join(pieces), False

    def attachment(
        self,
        part: structure.Part,
        section: str,
        info: PartInfo,
        role: str,
        depth: int,
    ) -> Attachment:
        """An attachment, with the view of an enclosed message when not too deep."""
        filename = info.filename
        if part.embedded is not None:
            if depth < self.limits.max_nested:
                nested = _Builder(self.data, self.limits, False)
                nested.text_left = self.text_left
                view = nested.message(part.embedded, section, depth + 1)
                self.text_left = nested.text_left
                self.truncated = self.truncated or view.truncated
            else:
                view = None
                self.truncated = True
            if not info.named:
                subject = view.headers.subject if view else ""
                filename = _eml_name(subject) or filename
            return Attachment(
                section, filename, info.content_type, part.end - part.body_start, message=view
            )
        return Attachment(
            section,
            filename,
            info.content_type,
            _decoded_size(self.data, part),
            info.content_id,
            inline=role == "related" or info.disposition == "inline",
        )


def _cid(part: structure.Part) -> str | None:
    value = part.header("content-id")
    return value.strip().strip("<>").strip() if value else None


def _eml_name(subject: str) -> str:
    name = safe_filename(subject[:80], "")
    return f"{name}.eml" if name else ""


_META = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def _meta_charset(octets: bytes) -> str | None:
    """HTML's own charset declaration in its first 1024 octets (WHATWG HTML §13.2.3.2), used
    only when the MIME part declares none."""
    m = _META.search(octets[:1024])
    return m.group(1).decode("ascii") if m else None


def _decoded_size(data: structure.Buffer, part: structure.Part) -> int:
    size = part.end - part.body_start
    cte = (part.header("content-transfer-encoding") or "").strip().lower()
    if cte != "base64":
        return size
    # Four characters carry three octets (RFC 2045 §6.8); line breaks and padding carry none.
    # Counted in pieces: ``data`` may be a memory map, which has no count().
    breaks = sum(c.count(b"\n") for c in content.Span(data, part.body_start, part.end).chunks())
    chars = size - 2 * breaks
    tail = bytes(data[max(part.body_start, part.end - 8) : part.end]).rstrip()
    return max(0, chars * 3 // 4 - (len(tail) - len(tail.rstrip(b"="))))
