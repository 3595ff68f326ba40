"""Attachments for download: safe file names, their Content-Disposition, and decoded content
streamed in bounded pieces.

A file name in mail is whatever the sender wrote (RFC 2183 ``filename``, RFC 2231 continued
and charset-tagged parameters, RFC 2047 words inside quotes as Outlook and Gmail write them).
:func:`safe_filename` reduces it to a last path component without control, format or quote
characters; :func:`content_disposition` writes it for an HTTP response per RFC 6266 with an
RFC 8187 ``filename*`` so non-ASCII names (Greek) arrive intact.  :func:`open_part` gives one
part's content with its transfer encoding undone, read in 64 KiB pieces
(:mod:`ourmail.mime.content`), so a 10 MB attachment never sits in memory whole.
"""

from __future__ import annotations

import email.message
import email.utils
import mimetypes
import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import quote

import attrs

from ourmail.mime import content, structure
from ourmail.web.charsets import DEFAULT_FALLBACK, header_text

#: Longest file name handed out, in characters (most file systems allow 255 octets).
MAX_FILENAME = 120

#: Types a browser may show in place (``inline``) from our origin: raster images only.  SVG and
#: HTML run script, so everything else is downloaded (``attachment``).
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})

#: Windows device names that cannot be file names, with or without an extension.
_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)

#: RFC 8187 §3.2.1 attr-char: what ``filename*`` may carry unescaped.
_ATTR_CHARS = "!#$&+-.^_`|~"


def _allowed(ch: str) -> bool:
    # Cc: controls (CR, LF, NUL...); Cf: format characters, among them the bidirectional
    # overrides that make "gpj.exe" look like "exe.jpg"; Cs/Co/Cn: surrogates, private, unassigned.
    return not unicodedata.category(ch).startswith("C") and ch not in "\"'\\/:*?<>|"


def safe_filename(name: str | None, fallback: str = "attachment") -> str:
    """A name safe to save a file as: the last component of any path (``/`` or ``\\``),
    NFC-normalised, without control or format characters, quotes, or characters Windows
    refuses; no leading dots or spaces; at most ``MAX_FILENAME`` characters with the extension
    kept.  ``fallback`` (made safe the same way; may be empty) when nothing is left."""
    text = unicodedata.normalize("NFC", name or "")
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(ch if _allowed(ch) else (" " if ch.isspace() else "") for ch in text)
    text = " ".join(text.split()).lstrip(". ").rstrip(". ")
    if _DEVICES.fullmatch(text):
        text = "_" + text
    if len(text) > MAX_FILENAME:
        _stem, dot, ext = text.rpartition(".")
        ext = ext if dot and 0 < len(ext) <= 10 else ""
        text = text[: MAX_FILENAME - len(ext) - 1].rstrip() + ("." + ext if ext else "")
    if not text:
        return safe_filename(fallback, "") if fallback else ""
    return text


def default_filename(section: str, content_type: str) -> str:
    """A name for a part that has none: ``part-1.2`` with the type's usual extension."""
    ext = mimetypes.guess_extension(content_type, strict=False) or ".bin"
    if content_type == "message/rfc822":
        ext = ".eml"
    return f"part-{section}{ext}"


def _ascii(text: str) -> str:
    """``text`` in ASCII letters where it can be (accents dropped), ``_`` for the rest."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    plain = re.sub(r"[^A-Za-z0-9 ._()\[\]{}+,=@&#!~-]", "_", plain)
    return "" if not plain.strip("_ ") else plain


def content_disposition(filename: str, inline: bool) -> str:
    """The value of an HTTP ``Content-Disposition`` header (RFC 6266 §4) for ``filename``:
    the name made safe again, an ASCII ``filename`` for old clients and, when the name is not
    plain ASCII, ``filename*=UTF-8''…`` (RFC 8187 §3.2) which current browsers prefer."""
    name = safe_filename(filename)
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    ascii_stem, ascii_ext = (_ascii(stem) or "attachment"), _ascii(ext)
    ascii_name = safe_filename(ascii_stem + ("." + ascii_ext if dot and ascii_ext else ""))
    value = f'{"inline" if inline else "attachment"}; filename="{ascii_name}"'
    if ascii_name != name:
        value += "; filename*=UTF-8''" + quote(name, safe=_ATTR_CHARS)
    return value


@attrs.frozen
class PartInfo:
    """What a part's MIME fields say about it (RFC 2045 §5, RFC 2183, RFC 2231, RFC 2392)."""

    content_type: str
    #: A safe file name: the sender's, made safe, or :func:`default_filename`.
    filename: str
    #: Whether the sender gave a name (``filename`` or Content-Type ``name``).
    named: bool
    #: RFC 2183 disposition kind (``inline``, ``attachment``), lower-case; None if absent.
    disposition: str | None
    #: The Content-ID without its angle brackets (RFC 2392 §2), None if absent.
    content_id: str | None
    charset: str | None
    #: RFC 3676 format=flowed text, and its DelSp=yes.
    flowed: bool
    delsp: bool


#: The fields whose parameters :func:`describe` reads with the email package's lenient
#: compat32 Message, which undoes RFC 2231 continuations and charsets and never raises on a
#: bad parameter.
_NAME_FIELDS = ("content-type", "content-disposition")


def _content_id(value: str | None) -> str | None:
    if not value:
        return None
    cid = value.strip().removeprefix("<").removesuffix(">").strip()
    return cid or None


def describe(
    part: structure.Part,
    section: str,
    hint: str | None = None,
    fallback: str = DEFAULT_FALLBACK,
) -> PartInfo:
    """What ``part``'s MIME fields say about it.  Names in raw 8-bit octets are read as UTF-8
    when valid, else in ``hint`` (the message's text charset) or ``fallback``."""
    msg = email.message.Message()
    for field in _NAME_FIELDS:
        value = part.header(field)
        if value is not None:
            msg[field] = value
    raw_name = msg.get_filename() or msg.get_param("name")
    if isinstance(raw_name, tuple):  # an RFC 2231 name= the email package left undecoded
        raw_name = email.utils.collapse_rfc2231_value(raw_name)
    name = safe_filename(header_text(raw_name, hint, fallback) if raw_name else None, "")
    ctype = f"{part.maintype}/{part.subtype}"
    kind = (part.header("content-disposition") or "").split(";", 1)[0].strip().lower()
    params = {k.lower(): v for k, v in part.params.items()}
    return PartInfo(
        content_type=ctype,
        filename=name or default_filename(section, ctype),
        named=bool(name),
        disposition=kind or None,
        content_id=_content_id(part.header("content-id")),
        charset=params.get("charset"),
        flowed=params.get("format", "").lower() == "flowed",
        delsp=params.get("delsp", "").lower() == "yes",
    )


@attrs.frozen
class PartDownload:
    """One body part ready to send: its type, a safe file name, and its decoded content.

    ``content`` reads the stored message in pieces each time :meth:`chunks` is called; when
    the transfer encoding is unknown it is the encoded octets as stored, typed
    ``application/octet-stream``."""

    section: str
    content_type: str
    filename: str
    content: content.Content

    @property
    def inline_safe(self) -> bool:
        """Whether the browser may show it in place (a raster image); never HTML or SVG."""
        return self.content_type in INLINE_TYPES

    def disposition(self, inline: bool = False) -> str:
        """The Content-Disposition header value; ``inline`` only for :attr:`inline_safe`."""
        return content_disposition(self.filename, inline and self.inline_safe)

    def chunks(self) -> Iterator[bytes]:
        """The decoded content in pieces of about 64 KiB (base64 and quoted-printable undone
        per RFC 2045 §6.7-6.8, leniently)."""
        return self.content.chunks()


def parse_section(section: str) -> list[int] | None:
    """``"2.1"`` -> ``[2, 1]`` (an IMAP part number, RFC 3501 §6.4.5); None if malformed."""
    if not re.fullmatch(r"[1-9][0-9]{0,5}(\.[1-9][0-9]{0,5}){0,40}", section):
        return None
    return [int(n) for n in section.split(".")]


def open_part(data: structure.Buffer, section: str) -> PartDownload | None:
    """The part ``section`` (IMAP numbering, as the message view lists it) of the message
    ``data`` (CRLF line endings, e.g. ``IStoredMessage.buffer()``), or None if there is no
    such part or it is a multipart with parts.  A message/rfc822 part is the enclosed
    message as stored (``.eml``)."""
    numbers = parse_section(section)
    root = structure.parse(data)
    part = structure.part_at(root, numbers) if numbers else None
    if part is None or part.children:  # a multipart is no one file (one without parts is)
        return None
    info = describe(part, section)
    raw = content.Span(data, part.body_start, part.end)
    ctype = info.content_type
    try:
        body = content.decoded(raw, part.header("content-transfer-encoding"))
    except content.UnknownCTE:
        body, ctype = raw, "application/octet-stream"
    return PartDownload(section, ctype, info.filename, body)
