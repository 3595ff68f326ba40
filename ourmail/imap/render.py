"""ENVELOPE, BODYSTRUCTURE and BODY of a message in IMAP syntax (RFC 3501 §7.4.2).

The store keeps a message's envelope and body structure as plain data
(:mod:`ourmail.mime.outline`); this module writes them as IMAP parenthesised lists.  A client
asks for the envelopes of a whole folder again and again, so renderings are memoised on the
summary's JSON bytes (equal bytes, equal rendering): a repeated FETCH ENVELOPE costs a lookup,
not a rendering.
"""

from __future__ import annotations

import functools
import re

from ourmail.imap.wire import quote
from ourmail.mime.outline import (
    EMPTY_TEXT,
    Addresses,
    BodyPart,
    Disposition,
    Envelope,
    Params,
    body_part_from_json,
    envelope_from_json,
)
from ourmail.mime.summary import Summary

#: Renderings kept per kind (ENVELOPE, BODYSTRUCTURE, BODY): a few MB for a large folder.
MEMO_SIZE = 20_000


#: Text that goes into a quoted string as it is: printable ASCII but ``"`` and ``\\``.
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{0,1000}")


def _q(value: str | None) -> bytes:
    """An nstring of header text: NIL, a quoted string or a literal (RFC 3501 §4.3, §4.5)."""
    if value is None:
        return b"NIL"
    if _PLAIN.fullmatch(value):
        return b'"' + value.encode("ascii") + b'"'
    return quote(value.encode("utf-8", "surrogateescape"))


def _addresses(addrs: Addresses) -> bytes:
    """RFC 3501 §9 ``env-from`` etc.: a list of (name adl mailbox host), NIL when none."""
    if not addrs:
        return b"NIL"
    return b"(%s)" % b"".join(
        b"(%s NIL %s %s)" % (_q(name), _q(mailbox), _q(host)) for name, mailbox, host in addrs
    )


def envelope(env: Envelope) -> bytes:
    """RFC 3501 §7.4.2 ENVELOPE."""
    from_ = _addresses(env.from_)
    return b"(%s %s %s %s %s %s %s %s %s %s)" % (
        _q(env.date),
        _q(env.subject),
        from_,
        # Sender and Reply-To default to From when absent (RFC 3501 §7.4.2).
        from_ if env.sender is None else _addresses(env.sender),
        from_ if env.reply_to is None else _addresses(env.reply_to),
        _addresses(env.to),
        _addresses(env.cc),
        _addresses(env.bcc),
        _q(env.in_reply_to),
        _q(env.message_id),
    )


def _params(params: Params) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_q(k.upper()) + b" " + _q(v) for k, v in params) + b")"


def _disposition(d: Disposition | None) -> bytes:
    if d is None:
        return b"NIL"
    return b"(" + _q(d.kind.upper()) + b" " + _params(d.params) + b")"


def body_structure(part: BodyPart, extensible: bool = True) -> bytes:
    """RFC 3501 §7.4.2 BODYSTRUCTURE (``extensible``) or BODY of a body part tree."""
    if part.children:
        inner = b"".join(body_structure(c, extensible) for c in part.children)
        items = [inner, _q(part.subtype.upper())]
        if extensible:
            items += [
                _params(part.params),
                _disposition(part.disposition),
                _q(part.language),
                _q(part.location),
            ]
        return b"(" + b" ".join(items) + b")"
    if part == EMPTY_TEXT:  # a multipart with no usable parts
        return b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 0 0)'
    items = [
        _q(part.maintype.upper()),
        _q(part.subtype.upper()),
        _params(part.params),
        _q(part.id),
        _q(part.description),
        _q(part.encoding.upper()),
        str(part.size).encode(),
    ]
    if part.message is not None:
        env, body = part.message
        items += [envelope(env), body_structure(body, extensible), str(part.lines).encode()]
    elif part.maintype == "text":
        items.append(str(part.lines).encode())
    if extensible:
        items += [
            _q(part.md5),
            _disposition(part.disposition),
            _q(part.language),
            _q(part.location),
        ]
    return b"(" + b" ".join(items) + b")"


@functools.lru_cache(maxsize=MEMO_SIZE)
def _envelope_of(raw: bytes) -> bytes:
    return envelope(envelope_from_json(raw))


@functools.lru_cache(maxsize=2 * MEMO_SIZE)
def _body_of(raw: bytes, extensible: bool) -> bytes:
    return body_structure(body_part_from_json(raw), extensible)


def summary_envelope(summary: Summary) -> bytes:
    """The ENVELOPE of a stored message's summary (memoised)."""
    return _envelope_of(summary.envelope_json)


def summary_body(summary: Summary, extensible: bool) -> bytes:
    """The BODYSTRUCTURE (``extensible``) or BODY of a stored message's summary (memoised)."""
    return _body_of(summary.body_json, extensible)
