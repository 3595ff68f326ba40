"""The ``Authentication-Results:`` header field (RFC 8601): writing ours, and removing any that
arrive from outside claiming to be ours (§5), so a sender cannot forge this host's verdicts."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ourmail.interfaces import AuthResult

#: RFC 5322 §3.2.3 atext, less the characters RFC 2045 §5.1 excludes from a token: a value
#: outside it is sent as a quoted-string (RFC 8601 §2.2 "value").
_TOKEN = re.compile(rb"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_FIELD = re.compile(rb"(?im)^authentication-results[ \t]*:")
#: RFC 5322 §2.2: a header field ends at a CRLF not followed by white space.
_FIELD_END = re.compile(rb"\r?\n(?![ \t])")
#: Folding width (RFC 5322 §2.1.1 recommends 78 characters a line).
WIDTH = 78


def _value(text: str) -> str:
    raw = text.encode("utf-8", "replace")
    if _TOKEN.fullmatch(raw):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _resinfo(result: AuthResult) -> str:
    parts = [f"{result.method}={result.result}"]
    if result.reason:
        parts.append(f"reason={_value(result.reason)}")
    parts += [f"{key}={_value(value)}" for key, value in result.properties]
    return " ".join(parts)


def header(authserv_id: str, results: Iterable[AuthResult]) -> bytes:
    """``Authentication-Results: <id>; spf=pass smtp.mailfrom=...; dkim=...`` folded, with CRLF;
    ``<id>; none`` when no check had anything to say (RFC 8601 §2.2)."""
    items = [_resinfo(r) for r in results] or ["none"]
    line = f"Authentication-Results: {authserv_id};"
    lines = []
    for i, item in enumerate(items):
        piece = item + (";" if i < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > WIDTH and line.strip():
            lines.append(line)
            line = "\t" + piece
        else:
            line += " " + piece
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def field(name: str, value: str) -> bytes:
    """Another header field a check adds, with CRLF (long values are left as the check made
    them: it knows where its own value may be folded)."""
    clean = re.sub(r"[\r\n]+[ \t]*", " ", value)
    return f"{name}: {clean}\r\n".encode()


def without_comments(value: bytes) -> bytes:
    """``value`` with its comments (RFC 5322 §3.2.2: nested, with quoted-pairs) made spaces;
    an unclosed comment runs to the end."""
    out = bytearray()
    depth = 0
    escaped = False
    for byte in value:
        if depth:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash: a quoted-pair
                escaped = True
            elif byte == 0x28:
                depth += 1
            elif byte == 0x29:
                depth -= 1
                if not depth:
                    out.append(0x20)
        elif byte == 0x28:
            depth = 1
        else:
            out.append(byte)
    return bytes(out)


def authserv_id_of(value: bytes) -> str:
    """The authserv-id an Authentication-Results value starts with (comments skipped)."""
    words = without_comments(value).split(b";", 1)[0].split()
    return words[0].decode("ascii", "replace").lower() if words else ""


def strip_own(head: bytes, authserv_id: str) -> bytes:
    """``head`` (header fields, up to and maybe including the blank line) without the
    Authentication-Results fields that claim ``authserv_id`` (RFC 8601 §5)."""
    out = []
    pos = 0
    ours = authserv_id.lower()
    for match in _FIELD.finditer(head):
        start = match.start()
        if start < pos:
            continue
        end_match = _FIELD_END.search(head, match.end())
        end = end_match.end() if end_match else len(head)
        if authserv_id_of(head[match.end() : end]) == ours:
            out.append(head[pos:start])
            pos = end
    out.append(head[pos:])
    return b"".join(out)


def strip_named(head: bytes, names: Iterable[str]) -> bytes:
    """``head`` without any field named in ``names`` (case-insensitive): fields a check
    writes itself (``X-Spam-Status``, say), which a sender must not be able to forge."""
    wanted = sorted({n.lower() for n in names})
    if not wanted:
        return head
    pattern = b"|".join(re.escape(n.encode("ascii")) for n in wanted)
    named = re.compile(rb"(?im)^(?:" + pattern + rb")[ \t]*:")
    out = []
    pos = 0
    for match in named.finditer(head):
        if match.start() < pos:
            continue
        end_match = _FIELD_END.search(head, match.end())
        end = end_match.end() if end_match else len(head)
        out.append(head[pos : match.start()])
        pos = end
    out.append(head[pos:])
    return b"".join(out)
