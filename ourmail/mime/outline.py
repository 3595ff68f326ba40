"""What a message is, as plain data: its envelope fields and the tree of its body parts.

The values are named tuples rather than attrs classes: a FETCH of a whole folder builds
thousands of them from the cache, and a tuple is the cheapest immutable value to build.

:func:`envelope` and :func:`body_part` read a parsed :class:`~ourmail.mime.structure.Part`
(RFC 5322 header fields, RFC 2045-2046 MIME fields) into frozen values that any protocol can
render: IMAP's ENVELOPE and BODYSTRUCTURE syntax lives in ``imap/``, not here.  Strings are
header text as written (not RFC 2047-decoded), with undecodable octets kept as surrogate
escapes, so ``value.encode("utf-8", "surrogateescape")`` gives back the stored octets.

Both have a compact JSON form (:func:`envelope_json`, :func:`body_part_json` and their
inverses), the form the summary cache keeps on disk.
"""

from __future__ import annotations

import json
import re
from email.utils import getaddresses
from typing import Any, NamedTuple

from ourmail.mime.structure import PARAM_RE, Part

#: MIME parameters, in the order written: ((name, value), …); names lower-cased.
Params = tuple[tuple[str, str], ...]


class Address(NamedTuple):
    """One address of an address header: display name, local part and domain (any may be
    None; a group's start and end are not kept)."""

    name: str | None
    mailbox: str | None
    host: str | None


#: The addresses of a header; None when the header is absent or empty.
Addresses = tuple[Address, ...] | None


class Envelope(NamedTuple):
    """The header fields a client lists a message by (RFC 5322 §3.6)."""

    date: str | None = None
    subject: str | None = None
    from_: Addresses = None
    #: None when absent or empty; a client usually shows From instead (RFC 3501 §7.4.2).
    sender: Addresses = None
    reply_to: Addresses = None
    to: Addresses = None
    cc: Addresses = None
    bcc: Addresses = None
    in_reply_to: str | None = None
    message_id: str | None = None


class Disposition(NamedTuple):
    """RFC 2183 Content-Disposition: the kind (``attachment`` when not given) and parameters."""

    kind: str
    params: Params = ()


class BodyPart(NamedTuple):
    """One MIME entity (RFC 2045-2046) and, for a multipart or message/rfc822, what it holds.

    ``size`` counts the octets of the body as stored (still transfer-encoded), ``lines`` its
    lines; a text part without a charset has ``us-ascii`` (RFC 2045 §5.2)."""

    maintype: str
    subtype: str
    params: Params = ()
    id: str | None = None
    description: str | None = None
    #: Content-Transfer-Encoding's first word as written; ``7BIT`` when absent (RFC 2045 §6.1).
    encoding: str = "7BIT"
    size: int = 0
    lines: int = 0
    md5: str | None = None
    disposition: Disposition | None = None
    language: str | None = None
    location: str | None = None
    #: The parts of a multipart, in order (none when its body has no delimiter line).
    children: tuple[BodyPart, ...] = ()
    #: The envelope and body of the message a message/rfc822 part encloses.
    message: tuple[Envelope, BodyPart] | None = None


def _addresses(value: str | None) -> Addresses:
    if not value:
        return None
    out = []
    for name, addr in getaddresses([value]):
        if not addr and not name:
            continue
        mailbox, at, host = addr.rpartition("@")
        if not at:
            mailbox, host = addr, ""
        out.append(Address(name or None, mailbox or None, host or None))
    return tuple(out)


def envelope(part: Part) -> Envelope:
    """The envelope fields of a message part's header."""
    h = part.header
    return Envelope(
        date=h("date"),
        subject=h("subject"),
        from_=_addresses(h("from")),
        sender=_addresses(h("sender")),
        reply_to=_addresses(h("reply-to")),
        to=_addresses(h("to")),
        cc=_addresses(h("cc")),
        bcc=_addresses(h("bcc")),
        in_reply_to=h("in-reply-to"),
        message_id=h("message-id"),
    )


def _disposition(part: Part) -> Disposition | None:
    value = part.header("content-disposition")
    if not value:
        return None
    kind = value.split(";", 1)[0].strip()
    params = {
        k.lower(): (re.sub(r"\\(.)", r"\1", v[1:-1]) if v.startswith('"') else v)
        for k, v in PARAM_RE.findall(value)
    }
    return Disposition(kind or "attachment", tuple(params.items()))


def body_part(part: Part, data: bytes) -> BodyPart:
    """The body part tree of ``part`` of the message ``data``."""
    h = part.header
    if part.maintype == "multipart":  # children may be empty: no delimiter was found
        return BodyPart(
            part.maintype,
            part.subtype,
            tuple(part.params.items()),
            disposition=_disposition(part),
            language=h("content-language"),
            location=h("content-location"),
            children=tuple(body_part(c, data) for c in part.children),
        )
    size = part.end - part.body_start
    params = dict(part.params)
    if part.maintype == "text" and "charset" not in params:
        params["charset"] = "us-ascii"
    cte = (h("content-transfer-encoding") or "").split()
    lines = data.count(b"\r\n", part.body_start, part.end) + (
        0 if data.endswith(b"\r\n", part.body_start, part.end) or size == 0 else 1
    )
    embedded = part.embedded
    return BodyPart(
        part.maintype,
        part.subtype,
        tuple(params.items()),
        id=h("content-id"),
        description=h("content-description"),
        encoding=cte[0] if cte else "7BIT",
        size=size,
        lines=lines,
        md5=h("content-md5"),
        disposition=_disposition(part),
        language=h("content-language"),
        location=h("content-location"),
        message=None if embedded is None else (envelope(embedded), body_part(embedded, data)),
    )


# -- the JSON form ----------------------------------------------------------------------------
# The tuples as JSON arrays, fields in order, no keys: an envelope of ten fields, an address as
# [name, mailbox, host], a body part of fourteen.  JSON keeps surrogate escapes (\udcxx).


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def envelope_json(env: Envelope) -> bytes:
    """The JSON form of an envelope (ASCII, no newline or tab)."""
    return _dump(env)


def body_part_json(part: BodyPart) -> bytes:
    """The JSON form of a body part tree (ASCII, no newline or tab)."""
    return _dump(part)


def _params(value: Any) -> Params:
    return tuple((k, v) for k, v in value)


def _addresses_from(value: Any) -> Addresses:
    return None if value is None else tuple(map(Address._make, value))


def _envelope_from(v: Any) -> Envelope:
    date, subject, f, s, r, t, c, b, irt, mid = v
    return Envelope(
        date,
        subject,
        _addresses_from(f),
        _addresses_from(s),
        _addresses_from(r),
        _addresses_from(t),
        _addresses_from(c),
        _addresses_from(b),
        irt,
        mid,
    )


def _body_from(v: Any) -> BodyPart:
    main, sub, params, id_, desc, enc, size, lines, md5, disp, lang, loc, children, msg = v
    return BodyPart(
        main,
        sub,
        _params(params),
        id_,
        desc,
        enc,
        size,
        lines,
        md5,
        None if disp is None else Disposition(disp[0], _params(disp[1])),
        lang,
        loc,
        tuple(_body_from(ch) for ch in children),
        None if msg is None else (_envelope_from(msg[0]), _body_from(msg[1])),
    )


def envelope_from_json(raw: bytes) -> Envelope:
    """An envelope from :func:`envelope_json`; ValueError if damaged."""
    try:
        return _envelope_from(json.loads(raw))
    except (TypeError, IndexError, RecursionError) as e:
        raise ValueError("damaged envelope") from e


def body_part_from_json(raw: bytes) -> BodyPart:
    """A body part tree from :func:`body_part_json`; ValueError if damaged."""
    try:
        return _body_from(json.loads(raw))
    except (TypeError, IndexError, RecursionError) as e:
        raise ValueError("damaged body structure") from e
