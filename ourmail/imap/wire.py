"""IMAP wire syntax (RFC 3501 §4, §9): parsing command arguments and formatting responses.

A command arrives as text with its literals already read; :func:`tokenize` turns it into atoms
(:class:`Atom`), strings (``bytes``, from quoted strings and literals) and parenthesised lists
(``list``).  ``[...]`` inside an atom is kept whole (``BODY[HEADER.FIELDS (From)]<0.10>``), as
the fetch grammar needs.  Every limit raises :class:`ParseError`, which becomes a ``BAD`` reply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ourmail import mutf7

#: RFC 3501 date month names, upper-cased, to their numbers.
MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
#: Stands for a literal in the command text; NUL cannot occur in a valid command line.
LITERAL_MARK = b"\x00"
MAX_DEPTH = 16
MAX_TOKENS = 100_000

_ATOM_STOP = frozenset(b' ()\x00"{')
_TAG = re.compile(r"^[!#$&',\-./0-9:;<=>?@A-Z^_`a-z|~\[]+$")


class ParseError(ValueError):
    """The command does not follow the grammar; the message goes into a BAD reply."""


class Atom(str):
    """An unquoted atom (case is kept; compare with ``.upper()``)."""


Token = Atom | bytes | list  # list holds Tokens


def tokenize(text: bytes, literals: Sequence[bytes]) -> list[Token]:
    """Split command text into tokens; ``LITERAL_MARK`` bytes take the next literal in order."""
    lits = iter(literals)
    root: list[Token] = []
    stack: list[list[Token]] = [root]
    pos, n, count = 0, len(text), 0
    while pos < n:
        c = text[pos]
        count += 1
        if count > MAX_TOKENS:
            raise ParseError("too many tokens")
        if c == 0x20:
            pos += 1
        elif c == 0x28:  # (
            if len(stack) > MAX_DEPTH:
                raise ParseError("lists nested too deeply")
            new: list[Token] = []
            stack[-1].append(new)
            stack.append(new)
            pos += 1
        elif c == 0x29:  # )
            if len(stack) == 1:
                raise ParseError("unbalanced ')'")
            stack.pop()
            pos += 1
        elif c == 0x22:  # "
            value, pos = _quoted(text, pos)
            stack[-1].append(value)
        elif c == 0x00:
            try:
                stack[-1].append(next(lits))
            except StopIteration:
                raise ParseError("literal mismatch") from None
            pos += 1
        else:
            start, depth = pos, 0
            while pos < n:
                c = text[pos]
                if c == 0x5B:  # [
                    depth += 1
                elif c == 0x5D and depth:  # ]
                    depth -= 1
                elif depth == 0 and c in _ATOM_STOP:
                    break
                elif c < 0x20 or c == 0x7F:
                    raise ParseError("control character in command")
                pos += 1
            if depth:
                raise ParseError("unbalanced '['")
            if pos == start:
                raise ParseError(f"unexpected {chr(text[pos])!r}")
            stack[-1].append(Atom(text[start:pos].decode("utf-8", "replace")))
    if len(stack) != 1:
        raise ParseError("unbalanced '('")
    return root


def _quoted(text: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    pos += 1
    while pos < len(text):
        c = text[pos]
        if c == 0x5C:  # backslash: only \" and \\ are allowed (RFC 3501 §4.3)
            if pos + 1 >= len(text) or text[pos + 1] not in b'"\\':
                raise ParseError("bad escape in quoted string")
            out.append(text[pos + 1])
            pos += 2
        elif c == 0x22:
            return bytes(out), pos + 1
        elif c in (0x00, 0x0A, 0x0D):
            raise ParseError("bad character in quoted string")
        else:
            out.append(c)
            pos += 1
    raise ParseError("unterminated quoted string")


def valid_tag(tag: str) -> bool:
    return bool(_TAG.match(tag)) and "+" not in tag


# -- taking arguments ------------------------------------------------------------------------


def astring(tok: Token) -> bytes:
    """An atom or string argument as bytes; ParseError for a list."""
    if isinstance(tok, bytes):
        return tok
    if isinstance(tok, Atom):
        return tok.encode("utf-8")
    raise ParseError("expected a string")


def mailbox_name(tok: Token, utf8: bool = False) -> str:
    """A mailbox argument: modified UTF-7 (UTF-8 when enabled), ``INBOX`` case-folded."""
    raw = astring(tok)
    try:
        name = raw.decode("utf-8") if utf8 else mutf7.decode(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ParseError("mailbox name is not valid modified UTF-7") from e
    return "INBOX" if name.upper() == "INBOX" else name


# -- writing responses -------------------------------------------------------------------------


#: Octets a quoted string cannot carry (RFC 3501 §9: QUOTED-CHAR is 7-bit, no CR, LF or NUL).
_UNQUOTABLE = re.compile(rb"[^\x01-\x09\x0b\x0c\x0e-\x7e]")
_UNQUOTABLE_UTF8 = re.compile(rb"[\x00\r\n\x7f]")


def quote(data: bytes | str, utf8: bool = False) -> bytes:
    """A string as an IMAP quoted string, or a literal when it cannot be quoted.  ``utf8``:
    the session allows UTF-8 in quoted strings (RFC 6855 §3, RFC 9051 ``quoted-char``)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    unquotable = _UNQUOTABLE_UTF8 if utf8 else _UNQUOTABLE
    if len(data) > 1000 or unquotable.search(data):
        return literal(data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: bytes) -> bytes:
    """A literal of ``data``, NULs sent as 0x80 (RFC 3501 §9: a literal is ``CHAR8``, no NUL)."""
    return b"{%d}\r\n" % len(data) + data.replace(b"\x00", b"\x80")


def nstring(data: bytes | str | None) -> bytes:
    return b"NIL" if data is None else quote(data)


def mailbox_out(name: str, utf8: bool = False) -> bytes:
    return quote(name.encode("utf-8"), utf8=True) if utf8 else quote(mutf7.encode(name))


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    return paren(f.encode("utf-8") for f in sorted(flags))
