"""One ``smtp.transaction`` log event per SMTP/LMTP transaction (docs/logging.md).

The log follows the server's own state, not the command verbs a client sends, so a command
the server refuses (a nested MAIL, an EHLO without argument, STARTTLS when already secure)
neither ends the logged transaction nor changes its sender.  A transaction starts when MAIL
gets its 250 (:meth:`TransactionLog.began`) and ends

* at the reply to the end of DATA/BDAT (LMTP: once every recipient's reply is sent), accepted
  or refused: its result follows the replies;
* when the server forgets it without a message (its reset on RSET, EHLO/HELO/LHLO,
  STARTTLS, a refusal; QUIT or the connection's end): ``refused``/``deferred`` with the
  last error reply it got (a refused RCPT), or ``abandoned`` when there was none.

A MAIL the server refuses while no transaction is open is logged as a refused transaction
with the sender it named.  A session that logged no transaction but got an error reply
(refused at connect, a failed AUTH, bad commands) logs one event at its end, with no sender.

The session's state is read through :class:`Facts` at the last moment before it is cleared,
so the event names the recipients, queue id and filter verdicts that the session had.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import attrs

from ourmail.logs import events
from ourmail.smtp import syntax

#: Bytes of a message's head searched for its Message-ID.
HEAD_FOR_ID = 64 * 1024
_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)")


@attrs.frozen
class Facts:
    """What the session knows now, for the event."""

    service: str
    client: str
    client_port: int | None
    helo: str | None
    tls: str | None
    user: str | None
    recipients: tuple[str, ...]
    filters: tuple[str, ...]


def message_id(head: bytes) -> str | None:
    """The Message-ID field's value (RFC 5322 §3.6.4) in a message's header, unfolded."""
    m = _MESSAGE_ID.search(head.split(b"\r\n\r\n", 1)[0])
    if m is None:
        return None
    value = re.sub(rb"\r?\n[ \t]+", b" ", m.group(1)).strip()
    return value.decode("utf-8", "replace")


def tls_description(handle: object) -> str | None:
    """``TLSv1.3/TLS_AES_256_GCM_SHA384`` for a pyOpenSSL connection (a TLS transport's
    ``getHandle()``), else None."""
    version = getattr(handle, "get_protocol_version_name", None)
    cipher = getattr(handle, "get_cipher_name", None)
    if version is None or cipher is None:
        return None
    return f"{version()}/{cipher()}"


@attrs.define
class _Transaction:
    started: float
    sender: str | None
    rcpt_refused: int = 0
    last_error: tuple[int, str] | None = None
    facts: Facts | None = None
    size: int | None = None
    message_id: str | None = None
    queue_id: str | None = None
    #: Replies owed at the end of data (1; LMTP: one per recipient), and those sent.
    due: int = 0
    replies: list[tuple[int, str]] = attrs.Factory(list)


class TransactionLog:
    """The transactions of one SMTP/LMTP session, each logged once."""

    def __init__(
        self,
        facts: Callable[[], Facts],
        clock: Callable[[], float],
        with_recipients: bool = True,
    ) -> None:
        self._facts = facts
        self._clock = clock
        self._with_recipients = with_recipients
        self._started = clock()
        self._open: _Transaction | None = None
        #: A MAIL outside a transaction, awaiting its reply.
        self._pending_mail: _Transaction | None = None
        self._verb = ""
        self._logged = False
        self._session_error: tuple[int, str] | None = None

    def command(self, verb: str, arg: str) -> None:
        """A command line arrived (every earlier command has had its reply).  A MAIL outside
        a transaction is remembered, with its sender, until its reply: an error reply logs
        it as a refused transaction, a 250 comes with :meth:`began`."""
        self._verb = verb
        self._pending_mail = None
        if verb == "MAIL" and self._open is None:
            try:
                sender: str | None = syntax.parse_path(arg, "FROM")[0]
            except ValueError:
                sender = None
            self._pending_mail = _Transaction(self._clock(), sender)

    def began(self, sender: str) -> None:
        """The server accepted MAIL from ``sender`` (before its 250 reply): the transaction
        starts (RFC 5321 §3.3)."""
        mail, self._pending_mail = self._pending_mail, None
        self._open = _Transaction(mail.started if mail else self._clock(), sender)

    def replied(self, code: int, text: str) -> None:
        """The session sent a reply."""
        mail, self._pending_mail = self._pending_mail, None
        txn = self._open
        if txn is not None and txn.due:
            txn.replies.append((code, text))
            if len(txn.replies) >= txn.due:
                self._emit(txn, txn.replies)
            return
        if code < 400:
            return
        if mail is not None:
            self._emit(mail, [], last_error=(code, text))
        elif txn is not None:
            txn.last_error = (code, text)
            if self._verb == "RCPT":
                txn.rcpt_refused += 1
        else:
            self._session_error = (code, text)

    def data_done(self, size: int, head: bytes, queue_id: str, due: int) -> None:
        """The message's last byte arrived; ``due`` replies will answer it."""
        txn = self._open
        if txn is None:
            return
        txn.size, txn.message_id, txn.queue_id = size, message_id(head), queue_id
        txn.due = max(due, 1)

    def reset(self) -> None:
        """The session is about to forget its transaction state.  A transaction without a
        message ends here; one whose data replies are still due keeps what the event
        needs and ends with its last reply."""
        txn = self._open
        if txn is None:
            return
        if txn.due:
            if txn.facts is None:
                txn.facts = self._facts()
        else:
            self._end_unfinished()

    def closed(self) -> None:
        """The connection ended."""
        self._end_unfinished()
        if not self._logged and self._session_error is not None:
            code, text = self._session_error
            txn = _Transaction(self._started, None)
            self._emit(txn, [], last_error=(code, text))

    def _end_unfinished(self) -> None:
        txn = self._open
        if txn is not None:
            self._emit(txn, txn.replies, txn.last_error)

    def _emit(
        self,
        txn: _Transaction,
        replies: Sequence[tuple[int, str]],
        last_error: tuple[int, str] | None = None,
    ) -> None:
        if txn is self._open:
            self._open = None
        self._logged = True
        facts = txn.facts or self._facts()
        result, code, text = _outcome(replies, last_error)
        events.transaction(
            events.TransactionSummary(
                service=facts.service,
                client=facts.client,
                client_port=facts.client_port,
                helo=facts.helo,
                tls=facts.tls,
                user=facts.user,
                sender=txn.sender,
                recipients=facts.recipients,
                rcpt_refused=txn.rcpt_refused,
                size=txn.size,
                message_id=txn.message_id,
                queue_id=txn.queue_id,
                result=result,
                code=code,
                reply=text,
                filters=facts.filters,
                duration=self._clock() - txn.started,
            ),
            with_recipients=self._with_recipients,
        )


def _outcome(
    replies: Sequence[tuple[int, str]], last_error: tuple[int, str] | None
) -> tuple[str, int | None, str]:
    """The result word and the reply that sums up a transaction: the first refusal among the
    replies to its data, else the first reply; without data, its last error."""
    if replies:
        ok = [r for r in replies if r[0] < 400]
        bad = [r for r in replies if r[0] >= 400]
        if not bad:
            return "accepted", *replies[0]
        if ok:
            return "partial", *bad[0]
        return ("refused" if any(c >= 500 for c, _ in bad) else "deferred"), *bad[0]
    if last_error is not None:
        return ("refused" if last_error[0] >= 500 else "deferred"), *last_error
    return "abandoned", None, ""
