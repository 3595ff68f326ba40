"""ENVELOPE, BODYSTRUCTURE and BODY of a message in IMAP syntax (RFC 3501 §7.4.2).

The store keeps a message's envelope and body structure as plain data
(:mod:`ourmail.mime.outline`); this module writes them as IMAP parenthesised lists.  A client
asks for the envelopes of a whole folder again and again, so renderings are memoised on the
summary's JSON bytes (equal bytes, equal rendering): a repeated FETCH ENVELOPE costs a lookup,
not a rendering.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any

from ourmail.imap.wire import quote
from ourmail.mime.outline import BodyPart, Envelope
from ourmail.mime.summary import Summary

#: ENVELOPE renderings kept (about 0.6 KB each with their keys): enough for the repeated
#: whole-folder FETCH of a folder this large to cost lookups only.
ENVELOPE_MEMO = 50_000
#: BODYSTRUCTURE and BODY renderings kept (clients ask for them less, and per message).
BODY_MEMO = 20_000


#: Text that goes into a quoted string as it is: printable ASCII but ``"`` and ``\\``.
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{0,1000}")


def _q(value: str | None) -> bytes:
    """An nstring of header text: NIL, a quoted string or a literal (RFC 3501 §4.3, §4.5)."""
    if value is None:
        return b"NIL"
    if _PLAIN.fullmatch(value):
        return b'"' + value.encode("ascii") + b'"'
    return quote(value.encode("utf-8", "surrogateescape"))


def _addresses(addrs: Sequence[Sequence[str | None]] | None) -> bytes:
    """RFC 3501 §9 ``env-from`` etc.: a list of (name adl mailbox host), NIL when none."""
    if not addrs:
        return b"NIL"
    return b"(%s)" % b"".join(
        b"(%s NIL %s %s)" % (_q(name), _q(mailbox), _q(host)) for name, mailbox, host in addrs
    )


def envelope(env: Envelope) -> bytes:
    """RFC 3501 §7.4.2 ENVELOPE."""
    return _envelope(env)


def body_structure(part: BodyPart, extensible: bool = True) -> bytes:
    """RFC 3501 §7.4.2 BODYSTRUCTURE (``extensible``) or BODY of a body part tree."""
    return _body(part, extensible)


_EMPTY_TEXT = b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 0 0)'

# The renderers read their values by position, so they take the named tuples of
# ourmail.mime.outline and, as well, the arrays of their JSON form (same fields, same order)
# straight from json.loads: building the tuples would cost a FETCH of a whole folder as much
# as the rendering.


def _envelope(env: Sequence[Any]) -> bytes:
    date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id = env
    rendered_from = _addresses(from_)
    return b"(%s %s %s %s %s %s %s %s %s %s)" % (
        _q(date),
        _q(subject),
        rendered_from,
        # Sender and Reply-To default to From when absent (RFC 3501 §7.4.2).
        rendered_from if sender is None else _addresses(sender),
        rendered_from if reply_to is None else _addresses(reply_to),
        _addresses(to),
        _addresses(cc),
        _addresses(bcc),
        _q(in_reply_to),
        _q(message_id),
    )


def _params(params: Sequence[Sequence[str]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(%s)" % b" ".join(b"%s %s" % (_q(k.upper()), _q(v)) for k, v in params)


def _disposition(d: Sequence[Any] | None) -> bytes:
    if d is None:
        return b"NIL"
    kind, params = d
    return b"(%s %s)" % (_q(kind.upper()), _params(params))


def _body(part: Sequence[Any], extensible: bool) -> bytes:
    main, sub, params, id_, desc, enc, size, lines, md5, disp, lang, loc, children, msg = part
    if main == "multipart":
        if not children:  # RFC 3501 §9 body-type-mpart needs a part: an empty text stands in
            return _EMPTY_TEXT
        inner = b"".join(_body(c, extensible) for c in children)
        if not extensible:
            return b"(%s %s)" % (inner, _q(sub.upper()))
        return b"(%s %s %s %s %s %s)" % (
            inner,
            _q(sub.upper()),
            _params(params),
            _disposition(disp),
            _q(lang),
            _q(loc),
        )
    items = [
        _q(main.upper()),
        _q(sub.upper()),
        _params(params),
        _q(id_),
        _q(desc),
        _q(enc.upper()),
        b"%d" % size,
    ]
    if msg is not None:
        env, body = msg
        items += [_envelope(env), _body(body, extensible), b"%d" % lines]
    elif main == "text":
        items.append(b"%d" % lines)
    if extensible:
        items += [_q(md5), _disposition(disp), _q(lang), _q(loc)]
    return b"(%s)" % b" ".join(items)


@functools.lru_cache(maxsize=ENVELOPE_MEMO)
def _envelope_of(raw: bytes) -> bytes:
    return _envelope(json.loads(raw))


@functools.lru_cache(maxsize=BODY_MEMO)
def _body_of(raw: bytes, extensible: bool) -> bytes:
    return _body(json.loads(raw), extensible)


def summary_envelope(summary: Summary) -> bytes:
    """The ENVELOPE of a stored message's summary (memoised)."""
    return _envelope_of(summary.envelope_json)


def summary_body(summary: Summary, extensible: bool) -> bytes:
    """The BODYSTRUCTURE (``extensible``) or BODY of a stored message's summary (memoised)."""
    return _body_of(summary.body_json, extensible)
