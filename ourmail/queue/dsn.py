"""Delivery status notifications (RFC 3464): the reports the outbound queue sends.

* :func:`build_report` writes a ``multipart/report; report-type=delivery-status`` message
  (RFC 6522, RFC 3464): a human-readable part, the ``message/delivery-status`` part, and the
  original message (``message/rfc822``) or only its header (``text/rfc822-headers``) when
  ``RET=HDRS`` was asked or the message is too big to return.
* A report about UTF-8 addresses or a message with a UTF-8 header uses the RFC 6533 types
  ``message/global-delivery-status``, ``message/global`` and ``message/global-headers``.
* The SMTP parameters that ask for reports (RET, ENVID, NOTIFY, ORCPT; RFC 3461 §4) are
  ``ourmail.dsnparams``, shared with the SMTP server.
"""

from __future__ import annotations

import email.utils
import secrets
from collections.abc import Sequence

import attrs

from ourmail.dsnparams import xtext_encode


@attrs.frozen
class RecipientStatus:
    """What happened to one recipient, as a DSN reports it (RFC 3464 §2.3)."""

    final_recipient: str
    action: str  # failed, delayed, delivered, relayed, expanded
    status: str  # an RFC 3463 code, e.g. 5.1.1
    original_recipient: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None  # the remote server's reply, e.g. "550 5.1.1 unknown"
    last_attempt: float | None = None
    will_retry_until: float | None = None


@attrs.frozen
class Original:
    """The message a report is about."""

    envid: str | None
    arrival: float
    ret: str | None
    content: bytes  # the message as queued


_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}
_EXPLANATIONS = {
    "failed": "could not be delivered to the following recipients; it will not be retried",
    "delayed": "has not yet been delivered to the following recipients; delivery will be retried",
    "delivered": "was delivered to the following recipients",
    "relayed": "was handed to a server that does not send delivery reports, for the "
    "following recipients",
}


def _date(when: float) -> str:
    return email.utils.formatdate(when, localtime=False)


def _header_of(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def build_report(
    reporting_mta: str,
    to: str,
    original: Original,
    statuses: Sequence[RecipientStatus],
    now: float,
    size_limit: int,
) -> bytes:
    """A complete RFC 3464 DSN message, CRLF line endings, sent from ``MAILER-DAEMON``."""
    action = statuses[0].action
    boundary = f"{secrets.token_hex(8)}/{reporting_mta}"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{to}>",
        f"Subject: {_SUBJECTS.get(action, 'Delivery Status Notification')}",
        f"Date: {_date(now)}",
        f"Message-ID: <{secrets.token_hex(12)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at {reporting_mta}.",
        "",
        f"Your message {_EXPLANATIONS.get(action, 'has the following status')}:",
        "",
    ]
    for s in statuses:
        lines.append(f"<{s.final_recipient.partition(';')[2]}>: {s.diagnostic or s.status}")
    content = original.content
    header_only = original.ret == "HDRS" or len(content) > size_limit or action != "failed"
    returned = _header_of(content) if header_only else content
    addresses = [to, *(s.final_recipient for s in statuses)]
    addresses += [s.original_recipient or "" for s in statuses]
    utf8 = not all(a.isascii() for a in addresses)  # RFC 6533 §6
    utf8_header = not _header_of(content).isascii()
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    lines += ["", f"--{boundary}", f"Content-Type: {status_type}", ""]
    # RFC 3464 §2.2: per-message fields, a blank line, then one block per recipient.
    lines.append(f"Reporting-MTA: dns; {reporting_mta}")
    if original.envid:
        lines.append(f"Original-Envelope-Id: {xtext_encode(original.envid)}")
    lines.append(f"Arrival-Date: {_date(original.arrival)}")
    for s in statuses:
        lines.append("")
        if s.original_recipient:
            kind, _, value = s.original_recipient.partition(";")
            lines.append(f"Original-Recipient: {kind};{xtext_encode(value)}")
        lines += [f"Final-Recipient: {s.final_recipient}", f"Action: {s.action}"]
        lines.append(f"Status: {s.status}")
        if s.remote_mta:
            lines.append(f"Remote-MTA: dns; {s.remote_mta}")
        if s.diagnostic:
            lines.append(f"Diagnostic-Code: smtp; {s.diagnostic}")
        if s.last_attempt:
            lines.append(f"Last-Attempt-Date: {_date(s.last_attempt)}")
        if s.will_retry_until:
            lines.append(f"Will-Retry-Until: {_date(s.will_retry_until)}")
    lines += ["", f"--{boundary}"]
    # RFC 3461 §4.3: HDRS returns the header only; reports of success or delay need no copy of
    # the message, and one too big to return is cut to its header.
    if header_only:
        kind = "message/global-headers" if utf8_header else "text/rfc822-headers"
        lines += [f"Content-Type: {kind}", "", ""]
    else:
        kind = "message/global" if utf8_header else "message/rfc822"
        lines += [f"Content-Type: {kind}", "Content-Transfer-Encoding: 8bit", "", ""]
    head = "\r\n".join(lines).encode("utf-8")
    if not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    return head + returned + f"\r\n--{boundary}--\r\n".encode()
