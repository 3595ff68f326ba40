"""The compose form as it arrives: its fields read and checked, addresses parsed.

Address fields are RFC 5322 §3.4 address lists as people type them (``Name <a@b>, c@d``),
parsed by :func:`email.utils.getaddresses`; what is not an address is named back to the user.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable

import attrs

#: Longest text accepted in one address field, the subject, and the body (characters).
MAX_ADDRESSES_FIELD = 16 * 1024
MAX_SUBJECT = 2000
MAX_TEXT = 2 * 1024 * 1024
#: Most attachments one message takes.
MAX_ATTACHMENTS = 100
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
#: Pieces of one address field read at most (more than any message may have recipients).
MAX_PIECES = 1000


@attrs.frozen
class ComposeForm:
    """One submission of the compose form (send, or save as a draft)."""

    from_: str = ""
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    text: str = ""
    #: The rich-text editor's markup (not yet cleaned), "" for plain text.
    html: str = ""
    #: ``FOLDER:UID`` of the draft this form last saved, "" if none.
    draft: str = ""
    #: ``reply FOLDER:UID`` / ``forward FOLDER:UID``: the message to flag once sent.
    origin: str = ""
    in_reply_to: str = ""
    references: str = ""
    #: Upload ids of the attachments kept.
    attachments: tuple[str, ...] = ()

    @classmethod
    def read(
        cls, field: Callable[[str, int], str | None], fields: Callable[[str], list[str]]
    ) -> ComposeForm:
        """The form from ``field(name, limit)`` (one value) and ``fields(name)`` (all)."""

        def text(name: str, limit: int) -> str:
            return field(name, limit * 4) or ""  # UTF-8: up to 4 octets a character

        refs = " ".join(_MESSAGE_ID.findall(text("references", 4000)))
        return cls(
            from_=text("from", 320).strip(),
            to=text("to", MAX_ADDRESSES_FIELD),
            cc=text("cc", MAX_ADDRESSES_FIELD),
            bcc=text("bcc", MAX_ADDRESSES_FIELD),
            subject=" ".join(text("subject", MAX_SUBJECT).split()),
            text=text("body", MAX_TEXT),
            html=text("html", MAX_TEXT),
            draft=text("draft", 1000).strip(),
            origin=text("origin", 1000).strip(),
            in_reply_to=" ".join(_MESSAGE_ID.findall(text("in_reply_to", 1000))[:1]),
            references=refs,
            attachments=tuple(dict.fromkeys(fields("attachment")))[:MAX_ATTACHMENTS],
        )


def parse_addresses(text: str) -> tuple[list[str], list[str]]:
    """The addresses of an address field, each as ``"Name" <address>`` or ``address``, and
    the pieces that are no address."""
    good: list[str] = []
    bad: list[str] = []
    pieces = [p for p in _split(text)[:MAX_PIECES] if p.strip()]
    for piece in pieces:
        found = email.utils.getaddresses([piece])
        if len(found) != 1 or not _ADDRESS.fullmatch(found[0][1]):
            bad.append(piece.strip())
            continue
        name, address = found[0]
        name = " ".join(name.replace('"', "'").replace("\\", "").split())
        good.append(f'"{name}" <{address}>' if name else address)
    return good, bad


def _split(text: str) -> list[str]:
    """``text`` cut at the commas and semicolons outside double quotes, in one pass."""
    pieces, start, quoted = [], 0, False
    for at, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char in ",;" and not quoted:
            pieces.append(text[start:at])
            start = at + 1
    pieces.append(text[start:])
    return pieces


def address_of(entry: str) -> str:
    """The bare address of a :func:`parse_addresses` entry."""
    return email.utils.parseaddr(entry)[1]
