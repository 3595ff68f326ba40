"""Delivery Status Notifications: the SMTP DSN extension (RFC 3461) and the reports (RFC 3464).

* ``MAIL FROM`` may carry ``RET=FULL|HDRS`` and ``ENVID=<xtext>``; ``RCPT TO`` may carry
  ``NOTIFY=NEVER|SUCCESS,FAILURE,DELAY`` and ``ORCPT=<addr-type>;<xtext>`` (RFC 3461 §4).
  :func:`parse_mail_params` and :func:`parse_rcpt_params` check them; the values travel with
  the message through the queue and are passed on to servers that offer DSN themselves.
* Without ``NOTIFY`` a recipient is notified of failure and delay, never of success
  (RFC 3461 §4.1).
* :func:`build_report` writes a ``multipart/report; report-type=delivery-status`` message
  (RFC 6522, RFC 3464): a human-readable part, the ``message/delivery-status`` part, and the
  original message (``message/rfc822``) or only its header (``text/rfc822-headers``) when
  ``RET=HDRS`` was asked or the message is too big to return.
* A report about UTF-8 addresses or a message with a UTF-8 header uses the RFC 6533 types
  ``message/global-delivery-status``, ``message/global`` and ``message/global-headers``.
"""

from __future__ import annotations

import email.utils
import re
import secrets
from collections.abc import Sequence

import attrs

#: RFC 3461 §4.4: ENVID is at most 100 characters.
MAX_ENVID = 100
#: The default NOTIFY (RFC 3461 §4.1): failures and delays.
DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})
_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_XTEXT_RE = re.compile(rb"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")


class DSNParamError(ValueError):
    """A DSN parameter is malformed; the message is the SMTP reply text."""


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: ``+XX`` hex escapes; anything outside the grammar is a DSNParamError."""
    raw = value.encode("utf-8", "surrogateescape")
    if not _XTEXT_RE.match(raw) and not _utf8_xtext(value):
        raise DSNParamError("5.5.4 Malformed xtext")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _utf8_xtext(value: str) -> bool:
    """RFC 6533 §3: with SMTPUTF8, ORCPT may carry UTF-8 and ``\\x{HEX}`` escapes."""
    return not value.isascii() and "=" not in value and not any(ord(c) < 33 for c in value)


def xtext_encode(value: str) -> str:
    """The RFC 3461 §4 xtext form of ``value`` (non-ASCII is kept as UTF-8, RFC 6533)."""
    return "".join(
        f"+{ord(c):02X}" if c in "+=" or (c.isascii() and not 33 <= ord(c) <= 126) else c
        for c in value
    )


@attrs.frozen
class MailParams:
    """The DSN parameters of ``MAIL FROM``."""

    ret: str | None = None  # "FULL" or "HDRS"
    envid: str | None = None


@attrs.frozen
class RcptParams:
    """The DSN parameters of one ``RCPT TO``."""

    notify: frozenset[str] | None = None  # None: the default; empty: NEVER
    orcpt: str | None = None  # "rfc822;user@example.org", decoded

    def wants(self, event: str) -> bool:
        """Whether the sender asked to hear of ``event`` (SUCCESS, FAILURE or DELAY)."""
        return event in (DEFAULT_NOTIFY if self.notify is None else self.notify)


#: The parameters of a transaction that gave none.
NO_MAIL_PARAMS = MailParams()
NO_RCPT_PARAMS = RcptParams()


def parse_mail_params(ret: str | None, envid: str | None) -> MailParams:
    """Check ``RET`` and ``ENVID`` (each None when absent)."""
    if ret is not None and ret.upper() not in ("FULL", "HDRS"):
        raise DSNParamError("5.5.4 RET must be FULL or HDRS")
    if envid is not None:
        if not envid or len(envid) > MAX_ENVID:
            raise DSNParamError("5.5.4 ENVID must be 1 to 100 characters")
        envid = xtext_decode(envid)
    return MailParams(ret.upper() if ret else None, envid)


def parse_rcpt_params(notify: str | None, orcpt: str | None) -> RcptParams:
    """Check ``NOTIFY`` and ``ORCPT`` (each None when absent)."""
    words: frozenset[str] | None = None
    if notify is not None:
        items = [w.upper() for w in notify.split(",")]
        if items == ["NEVER"]:
            words = frozenset()
        elif not items or any(w not in _NOTIFY_WORDS for w in items):
            raise DSNParamError("5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
        else:
            words = frozenset(items)
    original = None
    if orcpt is not None:
        kind, sep, value = orcpt.partition(";")
        if not sep or not kind or not value or len(orcpt) > 500:
            raise DSNParamError("5.5.4 ORCPT must be addr-type;xtext")
        original = f"{kind.lower()};{xtext_decode(value)}"
    return RcptParams(words, original)


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
