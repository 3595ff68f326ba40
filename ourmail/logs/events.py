"""The two structured events every admin tool reads: ``login`` (one per login attempt, every
service) and ``smtp.transaction`` (one per SMTP/LMTP transaction).

Each is a :mod:`twisted.logger` event with a fixed ``log_format`` (the human line, stable so
that fail2ban can match it) and the same facts as fields (the JSON line).  Every value that a
client chose (a user name, a HELO name, an address, a reply's text) goes through
:func:`escaped` first: no control character, line break, ANSI escape or bidi override
reaches a log line, and quotes are escaped, so a client cannot end a field early or forge a
second line.  The client's address comes first in every line, before anything it chose.

Never logged: passwords, SASL responses, session cookies, CSRF tokens, message bodies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs
from twisted.logger import Logger

log = Logger(namespace="ourmail.logs")

#: The most characters kept of one client-chosen value (a user name, HELO, address).
MAX_FIELD = 200
#: The most recipients named in one transaction event (the count is always exact).
MAX_RECIPIENTS = 50

# Login results (the ``result`` field).
OK = "ok"
BAD_PASSWORD = "bad-password"  # noqa: S105 - a result name, not a password
UNKNOWN_USER = "unknown-user"
#: The client is locked out (it guessed too often itself): a failure fail2ban counts.
THROTTLED = "throttled"
#: The account is locked out and the client never logged in to it: refused without checking
#: the password, but not counted by fail2ban, since anyone can lock an account out and the
#: client may be its owner on a new address.
ACCOUNT_LOCKED = "account-locked"
NO_TLS = "no-tls"
#: The password could not be checked (a directory server is down): not the client's fault.
UNAVAILABLE = "unavailable"
#: The right password of a disabled account (``ourmail user disable``): the client is told
#: it is wrong, but fail2ban does not count it (the owner's phone still trying).
ACCOUNT_DISABLED = "account-disabled"

#: What each result says in the human line: ``failed`` is what fail2ban counts.
_OUTCOME = {
    OK: "ok",
    BAD_PASSWORD: "failed",
    UNKNOWN_USER: "failed",
    THROTTLED: "failed",
    NO_TLS: "refused",
    ACCOUNT_LOCKED: "refused",
    UNAVAILABLE: "unchecked",
    ACCOUNT_DISABLED: "refused",
}

#: An address in angle brackets in a reply's text (``<alice@example.org>: Recipient address
#: rejected``, LMTP's ``<alice@example.org> delivered``): left out with the recipients.
_BRACKETED = re.compile(r"<[^<>]*>")

LOGIN_FORMAT = (
    'login {outcome}: client={client} service={service} user="{user}" '
    "mechanism={mechanism} result={result}"
)
TRANSACTION_FORMAT = (
    "smtp transaction {result}: client={client} port={client_port} service={service} "
    'id={queue_id} helo="{helo}" tls={tls} user="{user}" from=<{sender}> '
    "rcpts={rcpt_count} refused_rcpts={rcpt_refused} size={size} "
    'message_id="{message_id}" filters="{filters}" reply="{code} {reply}" '
    "duration={duration:.3f}"
)


def escaped(text: str | None, limit: int = MAX_FIELD) -> str:
    """``text`` safe inside a double-quoted log field: each character that is not printable
    (CR, LF, ESC, other controls, bidi overrides) as its Python escape (``\\x1b``), ``\\`` and
    ``"`` escaped with a backslash, at most ``limit`` characters of the original kept (then
    ``...``).  None is the empty string."""
    if not text:
        return ""
    cut = text[:limit]
    if cut.isprintable() and '"' not in cut and "\\" not in cut:  # the usual case, quickly
        return cut + "..." if len(text) > limit else cut
    out = "".join(
        "\\\\"
        if c == "\\"
        else '\\"'
        if c == '"'
        else c
        if c.isprintable()
        else c.encode("unicode_escape").decode("ascii")
        for c in cut
    )
    return out + "..." if len(text) > limit else out


def client_address(text: str) -> str:
    """A client address as the server saw it (an IP, ``unix``): nothing a client chose, but
    escaped anyway so that an odd transport cannot break the line."""
    return escaped(text, 64).replace(" ", "_") or "unknown"


def login(service: str, client: str, user: str, mechanism: str, result: str) -> None:
    """Log one login attempt.  ``user`` is the name as typed (bounded and escaped here);
    there is deliberately no parameter for the password."""
    log.info(
        LOGIN_FORMAT,
        event="login",
        outcome=_OUTCOME.get(result, "failed"),
        service=service,
        client=client_address(client),
        user=escaped(user),
        mechanism=escaped(mechanism, 20).replace(" ", "_") or "-",
        result=result,
    )


@attrs.frozen
class TransactionSummary:
    """The facts of one SMTP/LMTP transaction, as the session collected them."""

    service: str
    client: str
    client_port: int | None
    helo: str | None
    tls: str | None
    user: str | None
    #: The envelope sender (``""`` for the null sender), or None when MAIL was never given.
    sender: str | None
    recipients: Sequence[str]
    rcpt_refused: int
    size: int | None
    message_id: str | None
    queue_id: str | None
    #: accepted, partial, deferred, refused or abandoned.
    result: str
    code: int | None
    reply: str
    filters: Sequence[str]
    duration: float


def transaction(t: TransactionSummary, with_recipients: bool = True) -> None:
    """Log one transaction: the fields of ``t``, each client-chosen one escaped; the
    recipients' addresses only when ``with_recipients`` (their count always; without them,
    every ``<...>`` in the reply's text is ``<redacted>``, as replies name recipients)."""
    recipients = [escaped(r) for r in t.recipients[:MAX_RECIPIENTS]] if with_recipients else []
    reply = t.reply if with_recipients else _BRACKETED.sub("<redacted>", t.reply)
    log.info(
        TRANSACTION_FORMAT,
        event="smtp.transaction",
        service=t.service,
        client=client_address(t.client),
        client_port=t.client_port if t.client_port is not None else "-",
        helo=escaped(t.helo),
        tls=escaped(t.tls, 80).replace(" ", "_") or "none",
        user=escaped(t.user),
        sender=escaped(t.sender) if t.sender is not None else "",
        mail_given=t.sender is not None,
        recipients=recipients,
        rcpt_count=len(t.recipients),
        rcpt_refused=t.rcpt_refused,
        size=t.size if t.size is not None else 0,
        message_id=escaped(t.message_id, 250),
        queue_id=t.queue_id or "-",
        result=t.result,
        code=t.code if t.code is not None else 0,
        reply=escaped(reply, 250),
        filters=escaped(" ".join(t.filters), 500),
        duration=max(t.duration, 0.0),
    )
