"""Text from mail octets: body charsets and RFC 2047 encoded words, never an exception.

Mail declares its charset (RFC 2045 §5.1 ``charset=``, RFC 2047 ``=?charset?...?=``), and the
declaration is often wrong or missing.  :func:`decode_text` decodes with the declared charset
when it fits the octets, else tries UTF-8, else falls back to a configured single-byte charset,
so Greek mail in ISO-8859-7, Windows-1253 or UTF-8 reads correctly and a lying or unknown label
costs a few replacement characters, never an error.  The result holds no lone surrogates, so
it can always be encoded to UTF-8 for the browser.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import itertools
import re

#: Used when the declared charset is unknown and the octets are not UTF-8.  WHATWG Encoding's
#: default for Western locales; a Greek deployment may pass "windows-1253".
DEFAULT_FALLBACK = "windows-1252"

#: Labels decoded as another charset, as browsers do (WHATWG Encoding §4.2): Latin-1 labels
#: are Windows-1252, which shows the same text and more of the octets.  An ASCII label on
#: 8-bit octets is no information at all: the fallback decodes them.
_ALIASES = {
    "iso-8859-1": "windows-1252",
    "latin1": "windows-1252",
    "latin-1": "windows-1252",
    "iso_8859-1": "windows-1252",
    "iso-8859-9": "windows-1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-user-defined": "windows-1252",
}

#: Codecs Python knows that no mail should be decoded with: UTF-7 hides markup from filters
#: (WHATWG Encoding refuses it), the others are transforms or escapes, not charsets.
_REFUSED = {"utf-7", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"}

_SURROGATES = re.compile("[\ud800-\udfff]")


def codec_for(label: str | None) -> str | None:
    """The Python codec name for a charset label, or None if it is unknown or refused."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    # RFC 2231 §5: an encoded word's charset may carry "*language".
    name = _ALIASES.get(name.split("*", 1)[0], name.split("*", 1)[0])
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("_", "-") in _REFUSED:
        return None
    return info.name


def clean(text: str) -> str:
    """``text`` without lone surrogates (each becomes U+FFFD), so it encodes to UTF-8."""
    return _SURROGATES.sub("\ufffd", text) if _SURROGATES.search(text) else text


def decode_text(
    data: bytes, declared: str | None, fallback: str = DEFAULT_FALLBACK
) -> tuple[str, str]:
    """``data`` as text and the codec used, never an exception.

    The declared charset when the octets are valid in it, except that non-ASCII octets valid
    as UTF-8 under a single-byte label are UTF-8 (the label lies: such text in a single-byte
    charset is rarely valid UTF-8); else UTF-8 when valid; else the declared charset with
    U+FFFD for what does not decode, or ``fallback`` when the label is unknown, or is a UTF-8
    or ASCII label on octets that are neither."""
    codec = codec_for(declared)
    try:
        as_utf8: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        as_utf8 = None
    if codec is not None:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            pass
        else:
            single_byte = len(text) == len(data)
            if as_utf8 is not None and single_byte and codec != "utf-8" and not data.isascii():
                return as_utf8, "utf-8"
            return text, codec
    if as_utf8 is not None:
        return as_utf8, "utf-8"
    use = codec if codec not in (None, "utf-8", "ascii") else codec_for(fallback)
    use = use or DEFAULT_FALLBACK
    return clean(data.decode(use, "replace")), use


# -- RFC 2047 encoded words ------------------------------------------------------------------

#: RFC 2047 §2: =?charset?encoding?encoded-text?= (no white space inside).
_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _word_bytes(encoding: str, text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    if encoding in "bB":
        # Lenient as mail readers are: missing padding is added (RFC 2047 §4.1 wants it).
        raw = raw.rstrip(b"=")
        try:
            return base64.b64decode(raw + b"=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            return b""
    # RFC 2047 §4.2: "_" is a space, =XX an octet.
    return _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw.replace(b"_", b" "))


def decode_words(value: str, fallback: str = DEFAULT_FALLBACK) -> str:
    """A header value with its RFC 2047 encoded words decoded.

    White space between two encoded words is dropped (RFC 2047 §6.2), and adjacent words of
    one charset are joined before decoding, so a UTF-8 character split across two words (as
    some mailers write it) survives.  Text outside encoded words is kept as it is."""
    if "=?" not in value:
        return clean(value)
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []  # consecutive encoded words: (charset, octets)

    def flush() -> None:
        for charset, words in itertools.groupby(pending, key=lambda word: word[0]):
            run = b"".join(octets for _, octets in words)
            out.append(decode_text(run, charset, fallback)[0])
        pending.clear()

    pos = 0
    for m in _WORD.finditer(value):
        between = value[pos : m.start()]
        if between and not (pending and between.isspace()):
            flush()
            out.append(between)
        pending.append((m.group(1).lower(), _word_bytes(m.group(2), m.group(3))))
        pos = m.end()
    flush()
    out.append(value[pos:])
    return clean("".join(out))


def header_text(raw: str, hint: str | None = None, fallback: str = DEFAULT_FALLBACK) -> str:
    """A header value as :meth:`ourmail.mime.structure.Part.header` gives it (undecodable
    octets as surrogate escapes) made into text: raw octets are UTF-8 when valid (RFC 6532),
    else in ``hint`` (the body's charset, as Thunderbird guesses) or ``fallback``; then encoded
    words are decoded and white space runs are collapsed."""
    if _SURROGATES.search(raw):
        octets = raw.encode("utf-8", "surrogateescape")
        raw = decode_text(octets, hint, fallback)[0]
    return " ".join(decode_words(raw, fallback).split())
