"""The MIME structure of a message (RFC 2045-2046, RFC 5322): its parts and their sections.

:func:`parse` splits a CRLF message into a tree of :class:`Part` s by offsets only (no decoding),
so sizes and line counts are exact and sections are byte slices of the original.  Limits keep
hostile input cheap: nesting deeper than ``MAX_DEPTH`` or more than ``MAX_PARTS`` parts are
treated as opaque bodies, at most ``MAX_HEADERS`` header fields are read per part.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Callable

import attrs

#: A whole message as a read-only bytes-like object: ``bytes``, or a memory map of its file.
Buffer = bytes | mmap.mmap

MAX_DEPTH = 20
MAX_PARTS = 1000
MAX_HEADERS = 1000

#: One ``; name=value`` parameter of a Content-Type or Content-Disposition field (RFC 2045 §5.1).
PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]*)')


_UNFOLD = re.compile(r"\r\n([ \t])")


@attrs.define
class Part:
    """One MIME entity: header ``data[start:body_start]``, body ``data[body_start:end]``."""

    start: int
    body_start: int
    end: int
    #: (lower-cased name, raw field bytes including folding and the final CRLF)
    fields: list[tuple[str, bytes]]
    maintype: str = "text"
    subtype: str = "plain"
    params: dict[str, str] = attrs.Factory(dict)
    children: list[Part] = attrs.Factory(list)
    #: The enclosed message of a message/rfc822 part.
    embedded: Part | None = None

    def header(self, name: str) -> str | None:
        """The first field of that name, unfolded, without the name; None if absent."""
        for fname, raw in self.fields:
            if fname == name:
                value = raw.split(b":", 1)[1] if b":" in raw else b""
                text = value.decode("utf-8", "surrogateescape")
                if "\n" in text:
                    text = _UNFOLD.sub(r"\1", text)
                return text.strip()
        return None


def to_crlf(data: bytes) -> bytes:
    """Normalise bare LF and bare CR line endings to CRLF (RFC 5322 §2.3), as :func:`parse`
    and every protocol's view of a stored message want them."""
    pairs = data.count(b"\r\n")
    if data.count(b"\n") == pairs and data.count(b"\r") == pairs:  # counted, not copied
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


class LazyMessage:
    """A message read and parsed only when first asked for (FETCH, SEARCH)."""

    def __init__(self, read: Callable[[], Buffer]) -> None:
        self._read = read
        self._data: Buffer | None = None
        self._part: Part | None = None

    @property
    def data(self) -> Buffer:
        if self._data is None:
            self._data = self._read()
        return self._data

    @property
    def part(self) -> Part:
        if self._part is None:
            self._part = parse(self.data)
        return self._part


class _Counter:
    def __init__(self) -> None:
        self.parts = 0


def parse(data: Buffer) -> Part:
    """The part tree of a whole message (``data`` has CRLF line endings)."""
    return _parse(data, 0, len(data), 0, _Counter(), default_type=("text", "plain"))


def _parse(
    data: Buffer, start: int, end: int, depth: int, counter: _Counter, default_type: tuple[str, str]
) -> Part:
    counter.parts += 1
    if data[start : start + 2] == b"\r\n":
        body_start = start + 2
        fields: list[tuple[str, bytes]] = []
    else:
        sep = data.find(b"\r\n\r\n", start, end)
        body_start = end if sep < 0 else sep + 4
        fields = _fields(data[start:body_start])
    part = Part(start=start, body_start=body_start, end=end, fields=fields)
    part.maintype, part.subtype = default_type
    ctype = part.header("content-type")
    if ctype:
        _set_type(part, ctype)
    if depth >= MAX_DEPTH or counter.parts >= MAX_PARTS:
        if part.maintype in ("multipart", "message"):
            part.maintype, part.subtype = "application", "octet-stream"
        return part
    if part.maintype == "multipart":
        boundary = part.params.get("boundary")
        if not boundary:
            part.maintype, part.subtype = "text", "plain"
            return part
        child_default = ("message", "rfc822") if part.subtype == "digest" else ("text", "plain")
        for a, b in _split(data, body_start, end, boundary.encode("utf-8", "surrogateescape")):
            if counter.parts >= MAX_PARTS:
                break
            part.children.append(_parse(data, a, b, depth + 1, counter, child_default))
    elif (part.maintype, part.subtype) == ("message", "rfc822"):
        part.embedded = _parse(data, body_start, end, depth + 1, counter, ("text", "plain"))
    return part


def _fields(header: bytes) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for line in (
        header.split(b"\r\n")[:-2] if header.endswith(b"\r\n\r\n") else header.split(b"\r\n")
    ):
        if line[:1] in (b" ", b"\t") and out:
            name, raw = out[-1]
            out[-1] = (name, raw + line + b"\r\n")
        elif b":" in line:
            if len(out) >= MAX_HEADERS:
                break
            name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
            out.append((name, line + b"\r\n"))
    return out


def _set_type(part: Part, value: str) -> None:
    main, _, rest = value.partition("/")
    sub = re.split(r"[\s;]", rest, maxsplit=1)[0] if rest else ""
    main, sub = main.strip().lower(), sub.strip().lower()
    if main and sub and re.fullmatch(r"[a-z0-9!#$&^_.+-]+", main + sub):
        part.maintype, part.subtype = main, sub
    for name, val in PARAM_RE.findall(value):
        if val.startswith('"'):
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        part.params[name.lower()] = val


def _delimiter_at(data: Buffer, pos: int, end: int, delim: bytes) -> str | None:
    """``"close"``, ``"open"`` or None: is there a delimiter line at ``pos`` (RFC 2046 §5.1.1)?

    The boundary must be followed by ``--`` (the close delimiter) or by optional white space
    and CRLF, so boundary ``b1`` does not match the line ``--b10``.
    """
    rest = pos + len(delim)
    if data[pos:rest] != delim:
        return None
    if data[rest : rest + 2] == b"--":
        return "close"
    line_end = data.find(b"\r\n", rest, end)
    tail = data[rest : end if line_end < 0 else line_end]
    return "open" if not tail.strip(b" \t") else None


def _split(data: Buffer, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Body-part spans between ``--boundary`` delimiter lines (RFC 2046 §5.1.1)."""
    delim = b"--" + boundary
    # The first delimiter may open the body; later ones always follow a CRLF.
    pos = start if _delimiter_at(data, start, end, delim) else _next(data, start, end, delim)
    spans: list[tuple[int, int]] = []
    while pos is not None and _delimiter_at(data, pos, end, delim) == "open":
        line_end = data.find(b"\r\n", pos, end)
        part_start = end if line_end < 0 else line_end + 2
        nxt = _next(data, part_start - 2, end, delim)
        spans.append((part_start, end if nxt is None else max(nxt - 2, part_start)))
        pos = nxt
    return spans


def _next(data: Buffer, pos: int, end: int, delim: bytes) -> int | None:
    """The start of the next delimiter line after ``pos``, or None."""
    while True:
        found = data.find(b"\r\n" + delim, pos, end)
        if found < 0:
            return None
        if _delimiter_at(data, found + 2, end, delim):
            return found + 2
        pos = found + 2


# -- sections (RFC 3501 §6.4.5 BODY[section]) ---------------------------------------------------


def _child(part: Part, n: int) -> Part | None:
    if part.embedded is not None:
        part = part.embedded
    if part.children:
        return part.children[n - 1] if 0 < n <= len(part.children) else None
    return part if n == 1 else None


def part_at(root: Part, numbers: list[int]) -> Part | None:
    """The part a section path such as ``[2, 1]`` names (RFC 3501 §6.4.5), or None."""
    part: Part | None = root
    for n in numbers:
        part = _child(part, n) if part is not None else None
    return part


def section(
    root: Part, data: Buffer, numbers: list[int], text: str, fields: list[str]
) -> tuple[int, int] | bytes:
    """A section: ``numbers`` (part path), ``text`` one of "", HEADER, HEADER.FIELDS,
    HEADER.FIELDS.NOT, TEXT, MIME; ``fields`` for the HEADER.FIELDS forms.  The result is the
    section's span in ``data``, or for the HEADER.FIELDS forms the bytes built from it.  A part
    that does not exist gives an empty span."""
    part = part_at(root, numbers)
    if part is None:
        return (0, 0)
    if text == "MIME":
        return (part.start, part.body_start) if numbers else (0, 0)
    if text == "":
        return (part.start if not numbers else part.body_start, part.end)
    msg = part if not numbers else part.embedded
    if msg is None:
        return (0, 0)
    if text == "TEXT":
        return (msg.body_start, msg.end)
    if text == "HEADER":
        return (msg.start, msg.body_start)
    wanted = {f.lower() for f in fields}
    keep = text == "HEADER.FIELDS"
    out = b"".join(raw for name, raw in msg.fields if (name in wanted) == keep)
    return out + b"\r\n"
