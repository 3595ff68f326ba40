"""The message a user wrote, as MIME (RFC 5322, RFC 2045-2049), written to a file in pieces.

Header fields and the text part (``multipart/alternative`` with an HTML form when the user
wrote rich text) come from Python's ``email`` package (policy ``SMTP``, or
``SMTPUTF8`` when an address is not ASCII, RFC 6532): RFC 2047 words for a Greek subject or
name, lines folded below 78 characters, the text part 7bit when it is short-lined ASCII and
otherwise quoted-printable or base64, whichever is shorter.  Attachments are streamed from
their files: base64 in 76-character lines (RFC 2045 §6.8), their names as RFC 2231
parameters; an attached message (``message/rfc822``) is copied as it is, since RFC 2046
§5.2.1 forbids encoding it.  So no line exceeds 998 octets (RFC 5322 §2.1.1) and no
attachment is ever in memory whole.

Call :func:`write_message` in a thread: it reads and writes files.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import secrets
from collections.abc import Sequence
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from typing import Any, BinaryIO

import attrs

#: Bytes of an attachment encoded at a time: a multiple of 57 (one 76-character base64 line).
ENCODE_CHUNK = 57 * 1024


@attrs.frozen
class Part:
    """An attachment to include: its file, its (safe) name and content type."""

    path: Path
    filename: str
    content_type: str


@attrs.frozen
class Outgoing:
    """What the compose form says, ready to be written as a message."""

    from_: str
    to: Sequence[str] = ()
    cc: Sequence[str] = ()
    #: Written only into a draft: a sent message never shows its Bcc (RFC 5322 §3.6.3).
    bcc: Sequence[str] = ()
    subject: str = ""
    text: str = ""
    #: A whole HTML document: the text's rich form, sent as multipart/alternative after it.
    html: str = ""
    #: RFC 5322 §3.6.4: the message answered, and the thread's identifiers.
    in_reply_to: str = ""
    references: str = ""
    attachments: Sequence[Part] = ()
    #: For a draft: the ``\\Draft`` copy keeps Bcc and the message it answers or forwards.
    draft: bool = False
    origin: str = ""


def _policy(message: Outgoing) -> Any:
    addresses = [message.from_, *message.to, *message.cc, *message.bcc]
    return email.policy.SMTP if all(a.isascii() for a in addresses) else email.policy.SMTPUTF8


def _set_text(part: MIMEPart, message: Outgoing) -> None:
    text = message.text.replace("\r\n", "\n").replace("\r", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    part.set_content(text, subtype="plain", charset="utf-8")
    if message.html:  # RFC 2046 §5.1.4: the plain form first, the preferred (rich) one last
        part.add_alternative(message.html, subtype="html", charset="utf-8")


def header_fields(message: Outgoing, hostname: str) -> EmailMessage:
    """The message's header section (with its text when it has no attachment)."""
    policy = _policy(message)
    head = EmailMessage(policy=policy)
    head["From"] = message.from_
    if message.to:
        head["To"] = ", ".join(message.to)
    if message.cc:
        head["Cc"] = ", ".join(message.cc)
    if message.draft and message.bcc:
        head["Bcc"] = ", ".join(message.bcc)
    head["Subject"] = message.subject
    head["Date"] = email.utils.formatdate(localtime=True)
    # RFC 5322 §3.6.4: unique, with this host's name on the right.
    head["Message-ID"] = f"<{secrets.token_hex(16)}@{hostname}>"
    if message.in_reply_to:
        head["In-Reply-To"] = message.in_reply_to
    if message.references:
        head["References"] = message.references
    if message.draft and message.origin:
        head["X-Ourmail-Origin"] = message.origin
    head["User-Agent"] = "ourmail webmail"
    return head


def write_message(out: BinaryIO, message: Outgoing, hostname: str) -> None:
    """Write ``message`` as MIME with CRLF line endings into ``out``."""
    head = header_fields(message, hostname)
    policy = head.policy
    assert isinstance(policy, email.policy.EmailPolicy)
    if not message.attachments:
        _set_text(head, message)
        out.write(head.as_bytes(policy=policy))
        return
    boundary = f"=_ourmail_{secrets.token_hex(12)}"
    head["MIME-Version"] = "1.0"
    head["Content-Type"] = "multipart/mixed"
    head.set_param("boundary", boundary)
    out.write(_part_header(head, policy))
    out.write(b"This is a message in MIME format.\r\n")
    out.write(f"\r\n--{boundary}\r\n".encode())
    text = MIMEPart(policy=policy)
    _set_text(text, message)
    out.write(text.as_bytes(policy=policy))
    for attachment in message.attachments:
        out.write(f"\r\n--{boundary}\r\n".encode())
        _attachment(out, attachment, policy)
    out.write(f"\r\n--{boundary}--\r\n".encode())


def _attachment(out: BinaryIO, attachment: Part, policy: email.policy.EmailPolicy) -> None:
    part = MIMEPart(policy=policy)
    part["Content-Type"] = attachment.content_type
    if attachment.content_type != "message/rfc822":
        part.set_param("name", attachment.filename)  # for mail clients that read only this
    part["Content-Disposition"] = "attachment"
    part.set_param("filename", attachment.filename, header="Content-Disposition")
    with open(attachment.path, "rb") as f:
        if attachment.content_type == "message/rfc822":
            part["Content-Transfer-Encoding"] = "8bit" if _has_8bit(f) else "7bit"
            out.write(_part_header(part, policy))
            f.seek(0)
            last = b""
            while chunk := f.read(ENCODE_CHUNK):
                out.write(chunk)
                last = chunk
            if not last.endswith(b"\r\n"):
                out.write(b"\r\n")
            return
        part["Content-Transfer-Encoding"] = "base64"
        out.write(_part_header(part, policy))
        while chunk := f.read(ENCODE_CHUNK):
            out.write(base64.encodebytes(chunk).replace(b"\n", b"\r\n"))


def _part_header(part: MIMEPart, policy: email.policy.EmailPolicy) -> bytes:
    """A part's header fields and the blank line after them."""
    return b"".join(policy.fold_binary(name, value) for name, value in part.items()) + b"\r\n"


def _has_8bit(f: BinaryIO) -> bool:
    while chunk := f.read(ENCODE_CHUNK):
        if not chunk.isascii():
            return True
    return False
