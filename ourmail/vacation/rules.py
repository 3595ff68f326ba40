"""Whom an out-of-office reply goes to, and what it says: pure functions over the delivered
message's header, with no I/O (:mod:`ourmail.vacation.responder` does the rest).

The rules (RFC 3834 §2 and §3, RFC 5230 §4.5 and §4.6); no reply goes

* to the null sender ``<>`` (bounces, other auto-replies: RFC 3834 §2);
* for a message with ``Auto-Submitted:`` other than ``no`` (RFC 3834 §5, RFC 5230 §4.6);
* for ``Precedence: bulk``, ``list`` or ``junk`` (the de-facto marking RFC 3834 §2 mentions)
  or Microsoft's ``X-Auto-Response-Suppress`` asking for no out-of-office reply;
* for a message with any ``List-*`` field (RFC 2369, RFC 2919 ``List-Id``: RFC 5230 §4.6);
* to an envelope sender that is a robot by its name: ``MAILER-DAEMON``, ``LISTSERV``,
  ``majordomo``, ``owner-*``, ``*-owner``, ``*-request``, ``*-bounces``, ``noreply`` and its
  spellings (RFC 5230 §4.6, RFC 3834 §2);
* to the user themself (or one of their aliases);
* when none of the user's addresses is in ``To``, ``Cc``, ``Bcc`` or their ``Resent-``
  forms (RFC 5230 §4.5): a blind copy or a list's copy is not addressed to the user.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from collections.abc import Callable
from email.message import EmailMessage

import attrs

from ourmail.mime.structure import parse, to_crlf
from ourmail.mime.summary import decode_header
from ourmail.vacation.settings import Vacation, one_line

#: Header fields whose addresses count as addressing the user (RFC 5230 §4.5).
RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
#: ``Precedence:`` values of mail that is not written to one person.
BULK = frozenset({"bulk", "list", "junk"})
#: Local parts of senders that are programs (compared lower-cased).
_ROBOT = re.compile(
    r"^(?:mailer-daemon|listserv|majordomo|owner-.*|.*-owner|.*-request|.*-bounces?"
    r"|no[-_.]?reply.*|do[-_.]?not[-_.]?reply.*)$"
)
_MSGID = re.compile(r"<[^<>\s]{1,250}>")
#: Addresses read from the recipient fields, at most.
MAX_ADDRESSES = 1000
#: Message-IDs kept in the reply's References (the original's own comes last).
MAX_REFERENCES = 10
#: Characters of one To/Cc/... field read for the user's address, and fields of one name.
MAX_FIELD = 8 * 1024
MAX_SAME_FIELDS = 10
#: Characters of the original subject quoted in ``Auto: ...``.
MAX_QUOTED_SUBJECT = 200


@attrs.frozen
class Original:
    """What the rules read from the header of the message being answered."""

    subject: str = ""
    message_id: str | None = None
    references: tuple[str, ...] = ()
    #: The addresses of the recipient fields, lower-cased.
    recipients: tuple[str, ...] = ()
    auto_submitted: str | None = None
    precedence: str | None = None
    list_fields: bool = False
    suppress: str | None = None


def read_header(head: bytes) -> Original:
    """The fields the rules need from ``head`` (the message's first octets)."""
    root = parse(to_crlf(head))
    values: dict[str, list[str]] = {}
    list_fields = False
    for name, raw in root.fields:
        list_fields = list_fields or name.startswith("list-")
        value = raw.split(b":", 1)[1].decode("utf-8", "replace") if b":" in raw else ""
        values.setdefault(name, []).append(" ".join(value.split()))

    def first(name: str) -> str | None:
        found = values.get(name)
        return found[0] if found else None

    recipients: list[str] = []
    for name in RECIPIENT_FIELDS:
        # Bounded: getaddresses is slow on huge or hostile fields.
        fields = [value[:MAX_FIELD] for value in values.get(name, [])[:MAX_SAME_FIELDS]]
        for _, address in email.utils.getaddresses(fields):
            if "@" in address and len(recipients) < MAX_ADDRESSES:
                recipients.append(address.lower())
    message_id = _MSGID.search(first("message-id") or "")
    return Original(
        subject=decode_header(first("subject") or ""),
        message_id=message_id.group(0) if message_id else None,
        references=tuple(_MSGID.findall(first("references") or ""))[-MAX_REFERENCES:],
        recipients=tuple(recipients),
        auto_submitted=_token(first("auto-submitted")),
        precedence=_token(first("precedence")),
        list_fields=list_fields,
        suppress=first("x-auto-response-suppress"),
    )


def _token(value: str | None) -> str | None:
    """A field's first word, lower-cased (``auto-generated; by=x`` -> ``auto-generated``)."""
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def refusal(
    original: Original, sender: str, user: str, is_users: Callable[[str], bool]
) -> tuple[str | None, str | None]:
    """(why no reply goes, None) or (None, the user's address the message was sent to).

    ``is_users(address)``: whether ``address`` (lower-cased) is the user's own or an alias of
    theirs (the directory's ``may_send_as``)."""
    if not sender:
        return "null sender", None
    if original.auto_submitted not in (None, "no"):
        return f"Auto-Submitted: {original.auto_submitted}", None
    if original.precedence in BULK:
        return f"Precedence: {original.precedence}", None
    if original.list_fields:
        return "mailing list (List-* field)", None
    suppress = {word.strip().lower() for word in (original.suppress or "").split(",")}
    if suppress & {"oof", "autoreply", "all"}:
        return "X-Auto-Response-Suppress", None
    sender = sender.lower()
    local = sender.rpartition("@")[0] if "@" in sender else sender
    if _ROBOT.match(local):
        return "sender is a program", None
    if sender == user.lower() or is_users(sender):
        return "sender is the user", None
    for address in original.recipients:
        if address == user.lower() or is_users(address):
            return None, address
    return "user not in To or Cc", None


def reply(
    vacation: Vacation,
    original: Original,
    from_address: str,
    sender: str,
    hostname: str,
    now: float,
) -> tuple[bytes, bool]:
    """The out-of-office reply (RFC 3834 §3) as CRLF bytes, and whether it needs SMTPUTF8
    (an address that is not ASCII, RFC 6531)."""
    utf8 = not (from_address.isascii() and sender.isascii())
    msg = EmailMessage(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)
    msg["From"] = from_address  # RFC 3834 §3.1: the recipient on whose behalf it is sent
    msg["To"] = sender  # RFC 3834 §4: the envelope sender (Return-Path)
    quoted = one_line(original.subject)[:MAX_QUOTED_SUBJECT]  # no CR/LF from RFC 2047 words
    msg["Subject"] = vacation.subject.strip() or f"Auto: {quoted}".strip()  # RFC 3834 §3.1
    msg["Date"] = email.utils.formatdate(now, localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=hostname)
    if original.message_id:  # RFC 3834 §3.1
        msg["In-Reply-To"] = original.message_id
        msg["References"] = " ".join([*original.references, original.message_id])
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
    msg.set_content(vacation.text)
    return msg.as_bytes(), utf8
