"""The SMTP DSN extension's parameters (RFC 3461 §4), shared by the server and the queue.

* ``MAIL FROM`` may carry ``RET=FULL|HDRS`` and ``ENVID=<xtext>``; ``RCPT TO`` may carry
  ``NOTIFY=NEVER|SUCCESS,FAILURE,DELAY`` and ``ORCPT=<addr-type>;<xtext>`` (RFC 3461 §4).
  :func:`parse_mail_params` and :func:`parse_rcpt_params` check them (the SMTP server); the
  values travel with the message through the queue files and are passed on to servers that
  offer DSN themselves (the SMTP client).  The reports themselves are ``ourmail.queue.dsn``.
* Without ``NOTIFY`` a recipient is notified of failure and delay, never of success
  (RFC 3461 §4.1).

A leaf module: it imports nothing of ourmail, so ``smtp/`` and ``queue/`` may both use it.
"""

from __future__ import annotations

import re

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
