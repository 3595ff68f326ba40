"""The ESMTP server (RFC 5321) for the MX, submission and submissions listeners: the session's
state machine and its command table.  The pieces it drives each have their own module:
``syntax`` (MAIL/RCPT arguments), ``auth`` (the SASL steps of AUTH), ``data`` (DATA and BDAT
framing), ``spool`` (the message while it arrives), ``submission`` (RFC 6409 rules) and
``delivery`` (recipient checks and the fan-out to the store and the outbound queue).

Implementation notes (keep these true when changing this module):

* ``250`` after DATA is sent only after every recipient's copy is durable: the message is
  streamed into a spool file, hard-linked (or copied) into each recipient's Maildir ``tmp/``,
  renamed into ``new/``, and the group commit's ``syncfs`` flushes all of it (see
  ``store/committer.py``; without syncfs the spool file is fsynced first).
* The end of DATA is ``CRLF . CRLF`` and nothing else (SMTP smuggling); BDAT chunks are read
  exactly (RFC 3030).  The framing is ``smtp/data.py``.
* Never an open relay: a recipient in a domain that is not local is refused unless the session
  is authenticated (submission); then it goes to the outbound queue, as do an alias's forwards.
  ``250`` after DATA waits for the queue files to be durable too.  Recipient checks and the
  fan-out to the store and the queue are ``smtp/delivery.py``, shared with LMTP and the queue.
* DSN (RFC 3461): RET, ENVID, NOTIFY and ORCPT are checked and travel with the message;
  a local delivery whose recipient asked NOTIFY=SUCCESS queues a "delivered" report.
* AUTH is offered only on submission listeners and only under TLS (RFC 4954 §4, RFC 8314); its
  SASL steps are ``smtp/auth.py``.
* Memory per connection is bounded: command lines by ``max_line_length``, DATA by streaming to
  disk with at most one line (capped) held, message size by ``max_message_size``.
* Replies carry RFC 3463 enhanced status codes (RFC 2034).
* The filter chain (SPF, DKIM, DNSBL, ...) is asked at connect, MAIL, RCPT and the end of
  DATA, on the MX and, when configured, on submission and LMTP; ``smtp/checks.py`` is where
  its verdicts meet the session.
"""

from __future__ import annotations

import email.utils
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from ourmail import dsnparams
from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.login import Authenticator, LoginFailed, LoginUnavailable, Session
from ourmail.config import Limits
from ourmail.fsutil import HAVE_SYNCFS
from ourmail.interfaces import (
    AuthResult,
    ChainOutcome,
    DeliveryResult,
    IContactBook,
    IDirectory,
    IFilterChain,
    IMailStore,
    MailContext,
    Recipient,
    Stage,
)
from ourmail.logs import events
from ourmail.net.lineproto import LineProtocol
from ourmail.net.metrics import Metrics
from ourmail.smtp import auth, submission, syntax
from ourmail.smtp.checks import (
    HEADER_SCAN,
    added_fields,
    header_too_large,
    rewrite_header,
    run_stage,
)
from ourmail.smtp.data import ChunkReader, DotReader, MessageSink
from ourmail.smtp.delivery import (
    BAD_SRS,
    FULL,
    FULL_FOR_NOW,
    NO_QUEUE,
    RELAY_DENIED,
    SRS_BOUNCES_ONLY,
    TOO_LARGE,
    UNKNOWN,
    Accepted,
    Delivery,
    Refusal,
    Transaction,
    special_folder,
)
from ourmail.smtp.spool import Spool
from ourmail.smtp.submission import SendingRates
from ourmail.smtp.txnlog import HEAD_FOR_ID, Facts, TransactionLog, tls_description

log = Logger()

#: Why delivery refused a recipient, as the metrics' ``reason`` (others: ``other``).
REFUSAL_REASONS = {
    RELAY_DENIED: "relay",
    NO_QUEUE: "relay",
    FULL: "quota",
    FULL_FOR_NOW: "quota",
    UNKNOWN: "recipient",
    BAD_SRS: "recipient",
    SRS_BOUNCES_ONLY: "recipient",
    TOO_LARGE: "recipient",
}


@attrs.frozen
class SMTPContext:
    """What every SMTP connection of one listener shares."""

    hostname: str
    primary_domain: str
    limits: Limits
    directory: IDirectory
    store: IMailStore
    #: Recipient checks and fan-out to the store and the outbound queue.
    delivery: Delivery
    authenticator: Authenticator
    spool_dir: Path
    tls_context: IOpenSSLServerConnectionCreator
    submission: bool = False
    implicit_tls: bool = False
    #: Submission only: hourly sending limits, and whether to keep a copy in Sent.
    rates: SendingRates | None = None
    save_sent: bool = False
    #: The server's filter chain (it also removes forged Authentication-Results), or None.
    checks: IFilterChain | None = None
    #: Whether this listener runs the chain's checks (the MX; submission and LMTP if set).
    check_mail: bool = True
    #: Submission only: remembers whom users write to (the spam check's contacts), or None.
    contacts: IContactBook | None = None
    #: Counts accepted and refused mail (docs/metrics.md).
    metrics: Metrics = attrs.Factory(Metrics)
    #: Whether the ``smtp.transaction`` log events list the recipients (``[log] recipients``).
    log_recipients: bool = True


class SMTPServer(LineProtocol):
    """One SMTP session."""

    idle_timeout = 300  # RFC 5321 §4.5.3.2.7: at least 5 minutes

    def __init__(self, ctx: SMTPContext) -> None:
        super().__init__(ctx.limits, ctx.tls_context, ctx.implicit_tls)
        self.ctx = ctx
        self.helo: str | None = None
        self.esmtp = False
        self.user: str | None = None
        self.commands = 0
        self._continuation: Callable[[str], None] | None = None
        #: What the filter chain sees of this session.
        self.mail_context = MailContext(
            client_address="", listener=self.listener_name(), trusted=not ctx.check_mail
        )
        #: The chain refused the client at connect: every command but QUIT gets 503.
        self._refused_at_connect = False
        #: A command's work (a delivery, say) is under way: its reply is not out yet.
        self._busy = False
        #: The login was revoked during that work: 421 once its reply is out.
        self._revoke_pending = False
        #: The connect checks' junk verdicts, header fields and results, for every message.
        self._connect_verdicts = ChainOutcome()
        self._connect_results: list[AuthResult] = []
        #: One ``smtp.transaction`` log event per transaction (docs/logging.md).
        self.txn_log = TransactionLog(self._txn_facts, time.time, ctx.log_recipients)
        self._reset()

    # -- plumbing ------------------------------------------------------------------------

    def reply(self, code: int, text: str | list[str]) -> None:
        lines = [text] if isinstance(text, str) else text
        out = [f"{code}-{t}" for t in lines[:-1]] + [f"{code} {lines[-1]}"]
        self.write("".join(f"{line}\r\n" for line in out).encode("utf-8"))
        self.txn_log.replied(code, lines[-1])

    #: The protocol's name in the greeting and in Received: (RFC 3848).
    protocol_name = "ESMTP"

    def listener_name(self) -> str:
        """The listener as the filter chain names it."""
        return "submission" if self.ctx.submission else "smtp"

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.refuse():
            return
        self.log.info("{proto} connection from {peer}", proto=self.protocol_name, peer=self.peer)
        self.mail_context.client_address = self.peer
        if self._checking("connect"):
            self._async(self._check("connect").addCallback(self._greet))
        else:
            self._greet(None)

    def _greet(self, outcome: ChainOutcome | None) -> None:
        verdict = outcome.refusal if outcome is not None else None
        if verdict is None:
            # What the connect checks found holds for every transaction of the session.
            self._connect_verdicts = self._verdicts
            self._connect_results = list(self.mail_context.results)
            self._reset()
            self.reply(220, f"{self.ctx.hostname} {self.protocol_name} ourmail")
        elif verdict.code < 500:  # RFC 5321 §3.8: 421, then close
            self.reply(421, f"{verdict.status} {self.ctx.hostname} {verdict.text}")
            self.close()
        else:
            self._refused_at_connect = True
            self.reply(554, f"{verdict.status} {verdict.text}")

    def _check(self, stage: Stage) -> Deferred[ChainOutcome | None]:
        """Run the chain at ``stage``; fires with the outcome when it refuses, else None
        (its junk verdicts and header fields then wait for the end of DATA)."""
        assert self.ctx.checks is not None
        d = run_stage(self.ctx.checks, stage, self.mail_context, self._verdicts)
        return d.addCallback(self._count_filter_refusal)

    def _count_filter_refusal(self, outcome: ChainOutcome | None) -> ChainOutcome | None:
        if outcome is not None:
            self.count_refusal("filter")
        return outcome

    def count_refusal(self, reason: str) -> None:
        """Count a refused client, sender, recipient or message (docs/metrics.md)."""
        self.ctx.metrics.refused(self.listener_name(), reason)

    def send_refusal(self, why: str) -> None:
        self.reply(421, f"4.7.0 {self.ctx.hostname} {why}, try again later")  # RFC 5321 §3.8

    def connectionLost(self, reason: object = None) -> None:
        super().connectionLost(reason)
        self.txn_log.closed()
        self._discard_spool()

    def service_name(self) -> str:
        """The listener's name in the log: smtp, submission, submissions or lmtp."""
        name = self.listener_name()
        return "submissions" if name == "submission" and self.ctx.implicit_tls else name

    def replies_after_data(self) -> int:
        """How many replies answer the end of DATA/BDAT (one; LMTP: one per recipient)."""
        return 1

    def _txn_facts(self) -> Facts:
        """The session as the transaction log event describes it."""
        peer = self.transport.getPeer() if self.transport is not None else None
        handle = self.transport.getHandle() if self.secure and self.transport else None
        return Facts(
            service=self.service_name(),
            client=getattr(self, "peer", "unknown"),
            client_port=getattr(peer, "port", None),
            helo=self.helo,
            tls=tls_description(handle),
            user=self.user,
            recipients=tuple(a.recipient.address for a in self.recipients),
            filters=tuple(
                [f"{r.method}={r.result}" for r in self.mail_context.results]
                + [f"junk:{why}" for why in self._verdicts.junk]
            ),
        )

    def send_goodbye_timeout(self) -> None:
        self.reply(421, "4.4.2 Idle timeout, closing connection")

    def line_too_long(self) -> None:
        self.reply(500, "5.5.2 Line too long")
        self.count_error()

    def internal_error(self) -> None:
        self.reply(451, "4.3.0 Internal error, try again later")

    def say_goodbye_before_login(self) -> None:
        self.reply(421, "4.7.0 Too many commands before authentication, closing connection")

    def too_many_errors(self) -> None:
        self.reply(421, "4.7.0 Too many errors, closing connection")

    def error(self, code: int, text: str) -> None:
        self.reply(code, text)
        self.count_error()

    def _reset(self) -> None:
        self.txn_log.reset()
        self.sender: str | None = None
        self.utf8 = False
        self.declared_size = 0
        self.mail_params = dsnparams.NO_MAIL_PARAMS
        self.recipients: list[Accepted] = []
        self.mail_context.new_transaction()
        self.mail_context.results.extend(self._connect_results)
        #: Junk verdicts and header fields of this transaction's stages so far.
        self._verdicts = ChainOutcome(
            junk=list(self._connect_verdicts.junk), headers=list(self._connect_verdicts.headers)
        )
        self._discard_spool()
        self._spool: Spool | None = None
        self._sink: MessageSink | None = None
        #: What raw-mode input is for: the DATA text, a BDAT chunk, or one being skipped.
        self._reader: DotReader | ChunkReader | None = None
        #: The BDAT chunks of this transaction (RFC 3030), once BDAT started it.
        self._chunks: ChunkReader | None = None
        self._chunk_last = False

    def _discard_spool(self) -> None:
        spool = getattr(self, "_spool", None)
        if spool is not None:
            spool.discard()
            self._spool = None

    def _async(self, d: Deferred[object]) -> None:
        """Hold input until ``d`` is done; failures become 451 and a logged traceback."""
        self.pause()
        self._busy = True
        d.addErrback(self.fail)
        d.addBoth(self._async_done)

    def _async_done(self, _: object) -> None:
        self._busy = False
        if self._revoke_pending:
            self._revoked()
        else:
            self.resume()

    # -- commands ------------------------------------------------------------------------

    def line_received(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        self.commands += 1
        if self.commands > self.ctx.limits.max_commands:
            self.reply(421, "4.7.0 Too many commands, closing connection")
            self.close()
            return
        if self.ctx.submission and self.user is None and self.too_many_before_login():
            return
        if self._continuation is not None:
            cont, self._continuation = self._continuation, None
            cont(text)
            return
        verb, _, arg = text.partition(" ")
        self.txn_log.command(verb.upper(), arg)
        if self._refused_at_connect and verb.upper() != "QUIT":
            self.error(503, "5.7.1 Connection refused; say QUIT")  # RFC 5321 §3.1
            return
        handler = self.COMMANDS.get(verb.upper())
        if handler is None:
            self.error(500, "5.5.2 Command not recognized")
            return
        handler(self, arg.strip())

    def do_EHLO(self, arg: str) -> None:
        if not arg:
            self.error(501, "5.5.4 EHLO needs a domain or address literal")
            return
        self.helo, self.esmtp = arg.split()[0][:255], True
        self.mail_context.helo = self.helo
        self._reset()
        self.reply(250, [self.ctx.hostname, *self.extensions()])

    def extensions(self) -> list[str]:
        """What EHLO advertises now."""
        ext = [
            "PIPELINING",  # RFC 2920
            f"SIZE {self.ctx.limits.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "CHUNKING",  # RFC 3030
            "SMTPUTF8",  # RFC 6531
            "DSN",  # RFC 3461
        ]
        if not self.secure:
            ext.append("STARTTLS")  # RFC 3207
        if self.ctx.submission and self.secure and self.user is None:
            ext.append(f"AUTH {auth.MECHANISMS}")  # RFC 4954
        return ext

    def do_HELO(self, arg: str) -> None:
        if not arg:
            self.error(501, "5.5.4 HELO needs a domain")
            return
        self.helo, self.esmtp = arg.split()[0][:255], False
        self.mail_context.helo = self.helo
        self._reset()
        self.reply(250, self.ctx.hostname)

    def do_STARTTLS(self, arg: str) -> None:
        if self.secure:
            self.error(503, "5.5.1 TLS already active")
        elif arg:
            self.error(501, "5.5.4 STARTTLS takes no parameters")
        else:
            self.reply(220, "2.0.0 Ready to start TLS")
            self.start_tls()
            # RFC 3207 §4.2: forget everything learnt before the handshake.
            self.helo = None
            self._reset()

    def do_AUTH(self, arg: str) -> None:
        if not self.ctx.submission:
            self.error(502, "5.5.1 AUTH is only offered on the submission ports")
            return
        if not self.secure:
            events.login("smtp", self.peer, "", arg.partition(" ")[0], events.NO_TLS)
            self.error(538, "5.7.11 Encryption required for requested authentication mechanism")
            return
        if self.user is not None:
            self.error(503, "5.5.1 Already authenticated")
            return
        if self.sender is not None:
            self.error(503, "5.5.1 AUTH not allowed during a mail transaction")
            return
        mechanism, _, initial = arg.partition(" ")
        exchange = auth.SASLExchange()
        self._auth_mechanism = mechanism.upper()
        self._auth_step(exchange, exchange.start(mechanism, initial.strip()))

    def _auth_step(self, exchange: auth.SASLExchange, step: auth.Step) -> None:
        if isinstance(step, auth.Challenge):
            self.reply(334, step.text)
            self._continuation = lambda line: self._auth_step(exchange, exchange.respond(line))
        elif isinstance(step, auth.Failed):
            self.error(step.code, step.text)
        else:
            self._authenticate(step.username, step.password)

    def _authenticate(self, username: str, password: str) -> None:
        d = self.ctx.authenticator.login(
            username, password, self.peer, "smtp", self._auth_mechanism
        )

        def ok(session: Session) -> None:
            self.at_close(session.end)
            session.when_revoked(self._revoked)
            self.user = session.avatar.address
            self.mail_context.authenticated = self.user
            self.reply(235, "2.7.0 Authentication successful")

        def failed(f: object) -> None:
            if f.check(LoginUnavailable):  # type: ignore[attr-defined]
                self.error(454, "4.7.0 Temporary authentication failure")  # RFC 4954 §6
                return
            f.trap(LoginFailed)  # type: ignore[attr-defined]
            self.error(535, "5.7.8 Authentication credentials invalid")

        self._async(d.addCallbacks(ok, failed))

    def _revoked(self) -> None:
        """The account was disabled or deleted, or its password changed: RFC 5321 §3.8, a
        421 and the connection closed.  A message whose data has all arrived is being
        delivered: the 421 waits for its reply (250: taken, so the client does not send it
        again); one still arriving is not taken."""
        if self._busy:
            self._revoke_pending = True
            return
        self._revoke_pending = False
        self.reply(421, "4.7.0 Session ended by the server: please log in again")
        self.close()

    def do_MAIL(self, arg: str) -> None:
        if self.helo is None:
            self.error(503, "5.5.1 Say EHLO first")
            return
        if self.ctx.submission and self.user is None:
            self.count_refusal("auth")
            self.error(530, "5.7.0 Authentication required")
            return
        if self.sender is not None:
            self.error(503, "5.5.1 Nested MAIL command")
            return
        try:
            path, params = syntax.parse_path(arg, "FROM")
        except ValueError:
            self.error(501, "5.5.4 Syntax: MAIL FROM:<address> [parameters]")
            return
        if self.user is not None:
            if not self._may_send_as(path):  # RFC 6409 §6.1: the user's own address or alias
                self.count_refusal("auth")
                self.error(553, f"5.7.1 <{path}>: Sender address not owned by {self.user}")
                return
            if self.ctx.rates is not None and not self.ctx.rates.may_send(self.user):
                self.count_refusal("rate")
                self.reply(451, "4.7.1 Hourly sending limit reached, try again later")
                return
        try:
            options = syntax.mail_options(path, params, self.ctx.limits.max_message_size)
        except syntax.BadArgument as e:
            self.error(e.code, e.text)
            return
        self.declared_size, self.utf8, self.mail_params = options.size, options.utf8, options.dsn
        if self._checking("mail"):
            self.mail_context.sender = path
            d = self._check("mail").addCallback(self._mail_checked, path)
            self._async(d)
        else:
            self._mail_checked(None, path)

    def _mail_checked(self, refusal: ChainOutcome | None, path: str) -> None:
        if refusal is not None:
            self._refuse(refusal)
            return
        self.sender = self.mail_context.sender = path
        self.txn_log.began(path)
        self.reply(250, "2.1.0 Ok")

    def _refuse(self, outcome: ChainOutcome) -> None:
        """Answer with the chain's refusal and forget the transaction (5xx counts as an
        error towards max_errors, 4xx does not)."""
        verdict = outcome.refusal
        assert verdict is not None
        self._reset()
        answer = self.error if verdict.code >= 500 else self.reply
        answer(verdict.code, f"{verdict.status} {verdict.text}")

    def refuse_message(self, code: int, text: str) -> None:
        """Refuse the message at the end of DATA/BDAT and forget the transaction (5xx counts
        as an error towards max_errors, 4xx does not).  SMTP answers once (RFC 5321
        §4.2.5); LMTP once per recipient."""
        self._reset()
        answer = self.error if code >= 500 else self.reply
        answer(code, text)

    def do_RCPT(self, arg: str) -> None:
        if self.sender is None:
            self.error(503, "5.5.1 Need MAIL before RCPT")
            return
        if len(self.recipients) >= self.ctx.limits.max_recipients:
            self.count_refusal("other")
            self.reply(452, "4.5.3 Too many recipients")
            return
        rates = self.ctx.rates
        weight = sum(submission.rate_weight(a.recipient) for a in self.recipients)
        if self.user and rates and not rates.may_send(self.user, weight + 1):
            self.count_refusal("rate")
            self.reply(451, "4.7.1 Hourly recipient limit reached, try again later")
            return
        try:
            path, params = syntax.parse_path(arg, "TO")
        except ValueError:
            self.error(501, "5.5.4 Syntax: RCPT TO:<address>")
            return
        try:
            rcpt_params = syntax.rcpt_options(path, params, self.utf8)
        except syntax.BadArgument as e:
            self.error(e.code, e.text)
            return
        if path.lower() == "postmaster":  # RFC 5321 §4.5.1
            path = f"postmaster@{self.ctx.primary_domain}"
        try:
            # RFC 5321 §4.5.3.1: accept local parts beyond 64 octets (SRS addresses are).
            address = normalise_address(path, max_local=syntax.MAX_PATH)
        except AddressError:
            domain = path.rpartition("@")[2].lower()
            if not self.ctx.directory.is_local_domain(domain) and self.user is None:
                self.count_refusal("relay")
                self.error(554, f"5.7.1 <{path}>: Relay access denied")
            else:
                self.count_refusal("recipient")
                self.error(550, f"5.1.1 <{path}>: Recipient address rejected")
            return
        if any(a.recipient.address == address for a in self.recipients):
            # Taken already: answered without another look-up (a group's expansion).
            self.reply(250, "2.1.5 Ok")
            return
        d = self.ctx.delivery.resolve(
            address, self.declared_size, self.user is not None, self.sender
        )
        d.addCallback(self._rcpt_resolved, path, rcpt_params)
        self._async(d)

    def _rcpt_resolved(
        self, rcpt: Recipient | Refusal, path: str, params: dsnparams.RcptParams
    ) -> None:
        if isinstance(rcpt, Refusal):
            self.count_refusal(REFUSAL_REASONS.get(rcpt, "other"))
            # 4xx only tells the client to come back; 5xx counts towards max_errors.
            answer = self.error if rcpt.code >= 500 else self.reply
            answer(rcpt.code, f"{rcpt.status} <{path}>: {rcpt.text}")
        else:
            self._accept(rcpt, params)

    def _accept(self, rcpt: Recipient, params: dsnparams.RcptParams) -> None:
        if self._checking("rcpt"):
            self.mail_context.recipient = rcpt.address
            d = self._check("rcpt").addCallback(self._rcpt_checked, rcpt, params)
            self._async(d)
        else:
            self._rcpt_checked(None, rcpt, params)

    def _rcpt_checked(
        self, refusal: ChainOutcome | None, rcpt: Recipient, params: dsnparams.RcptParams
    ) -> None:
        self.mail_context.recipient = None
        if refusal is not None:
            verdict = refusal.refusal
            assert verdict is not None
            answer = self.error if verdict.code >= 500 else self.reply
            answer(verdict.code, f"{verdict.status} {verdict.text}")  # this recipient only
            return
        rates = self.ctx.rates
        weight = sum(submission.rate_weight(a.recipient) for a in self.recipients)
        if (
            self.user
            and rates
            and not rates.may_send(self.user, weight + submission.rate_weight(rcpt))
        ):
            # A group's or forward's addresses elsewhere each count (an amplifier otherwise).
            self.count_refusal("rate")
            self.reply(451, "4.7.1 Hourly recipient limit reached, try again later")
            return
        if all(a.recipient.address != rcpt.address for a in self.recipients):
            self.recipients.append(Accepted(rcpt, params))
            self.mail_context.recipients.append(rcpt.address)
            self.mail_context.mailboxes[rcpt.address] = rcpt.mailboxes
        self.reply(250, "2.1.5 Ok")

    def _transaction_ready(self) -> bool:
        if self.sender is None:
            self.error(503, "5.5.1 Need MAIL command")
            return False
        if not self.recipients:
            self.error(554, "5.5.1 No valid recipients")
            return False
        return True

    def _open_spool(self) -> MessageSink:
        self.queue_id = secrets.token_hex(8)
        self._arrival = time.time()
        self._spool = Spool(self.ctx.spool_dir, self.queue_id)
        received = self._received_header()
        self._spool.write(received)
        self._received_len = len(received)
        self._sink = MessageSink(self._spool, self.ctx.limits.max_message_size)
        return self._sink

    def do_DATA(self, arg: str) -> None:
        if not self._transaction_ready():
            return
        if self._spool is not None:  # BDAT started this transaction
            self.error(503, "5.5.1 DATA cannot follow BDAT")
            return
        self._reader = DotReader(self._open_spool())
        self.reply(354, "End data with <CR><LF>.<CR><LF>")
        self.setTimeout(self.ctx.limits.data_timeout)
        self.set_raw_mode()

    def do_BDAT(self, arg: str) -> None:
        """RFC 3030 CHUNKING: ``BDAT <size> [LAST]``, exactly <size> bytes follow."""
        parts = arg.split()
        if (
            not parts
            or not parts[0].isdigit()
            or len(parts) > 2
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            self.error(501, "5.5.4 Syntax: BDAT <size> [LAST]")
            return
        size, last = int(parts[0]), len(parts) == 2
        if size > self.ctx.limits.max_message_size + (1 << 20):
            # Too big to read through: the chunk's bytes would be taken for commands.
            self.count_refusal("size")
            self.reply(552, "5.3.4 Chunk too large, closing connection")
            self.close()
            return
        if not self._transaction_ready():
            if size:  # RFC 3030 §2: the octets are read and discarded
                self._reader = ChunkReader()
                self._reader.expect(size)
                self.set_raw_mode()
            return
        if self._chunks is None:
            self._chunks = ChunkReader(self._open_spool())
        self.setTimeout(self.ctx.limits.data_timeout)
        self._chunk_last = last
        if size:
            self._chunks.expect(size)
            self._reader = self._chunks
            self.set_raw_mode()
        else:
            self._chunk_done()

    def _chunk_done(self) -> None:
        assert self._chunks is not None and self._sink is not None
        if not self._chunk_last:
            self.setTimeout(self.idle_timeout)
            self.reply(250, f"2.0.0 {self._sink.size} octets received")
            return
        self._chunks.end()
        self._finish_data()

    def _received_header(self) -> bytes:
        """RFC 5321 §4.4 trace header, with RFC 3848 protocol names."""
        base = self.protocol_name if self.esmtp else "SMTP"
        if self.utf8 and base == "ESMTP":
            base = "UTF8SMTP"  # RFC 6531 §3.7.3
        proto = base + ("S" if self.secure else "") + ("A" if self.user else "")
        only = self.recipients[0].recipient.address if len(self.recipients) == 1 else None
        rcpt = f"\r\n\tfor <{only}>" if only else ""
        date = email.utils.formatdate(localtime=True)
        helo = re.sub(r"[^\x21-\x7e]", "?", self.helo or "unknown")
        literal = f"IPv6:{self.peer}" if ":" in self.peer else self.peer  # RFC 5321 §4.1.3
        return (
            f"Received: from {helo} ([{literal}])\r\n\tby {self.ctx.hostname} (ourmail) "
            f"with {proto} id {self.queue_id}{rcpt};\r\n\t{date}\r\n"
        ).encode("utf-8" if self.utf8 else "ascii", "replace")  # RFC 6532: UTF-8 headers

    def raw_data_received(self, chunk: bytes) -> None:
        assert self._reader is not None
        rest = self._reader.feed(chunk)
        if rest is None:
            return
        reader, self._reader = self._reader, None
        self.set_line_mode(rest)
        if isinstance(reader, DotReader):
            self._finish_data()
        elif reader is self._chunks:
            self._chunk_done()

    def _finish_data(self) -> None:
        self.setTimeout(self.idle_timeout)
        assert self._sink is not None and self._spool is not None
        head = self._spool.head(HEAD_FOR_ID)
        self.txn_log.data_done(self._sink.size, head, self.queue_id, self.replies_after_data())
        if self._sink.too_big:
            self.count_refusal("size")
            self.refuse_message(552, "5.3.4 Message size exceeds fixed maximum message size")
            return
        if self.user is not None and not self._complete_submission():
            return
        self._async(self._check_data())

    @inlineCallbacks
    def _check_data(self) -> Deferred[None]:
        """The chain's verdict on the message, then its delivery (or the refusal).  Forged
        Authentication-Results under our id are removed on every listener, checked or not."""
        checks, spool = self.ctx.checks, self._spool
        assert spool is not None
        try:
            # Read once: for the limit, then the rewrite.
            head = spool.head(HEADER_SCAN) if checks is not None else b""
            if checks is not None and header_too_large(spool, head):
                self.count_refusal("size")
                self.refuse_message(552, "5.3.4 Message header too large")
                return
            if self._checking("data"):
                self.mail_context.content = spool.source()
                refusal = yield self._check("data")
                if refusal is not None:
                    verdict = refusal.refusal
                    assert verdict is not None
                    self.refuse_message(verdict.code, f"{verdict.status} {verdict.text}")
                    return
            if checks is not None:
                fields = added_fields(checks, self.mail_context, self._verdicts)
                at = self._received_len
                if spool.on_disk() is None:
                    rewrite_header(spool, checks, fields, at, head)
                else:  # a large message: its file is rewritten off the reactor
                    yield deferToThread(rewrite_header, spool, checks, fields, at, head)
        except Exception:
            self._reset()
            raise
        yield self._deliver()

    def _checking(self, stage: Stage) -> bool:
        """Whether a check runs at ``stage`` on this listener's mail (only the ``trusted``
        checks where the listener trusts it: submission, LMTP)."""
        checks = self.ctx.checks
        return checks is not None and checks.runs_at(stage, self.mail_context.trusted)

    def _may_send_as(self, address: str) -> bool:
        assert self.user is not None
        return submission.may_send_as(self.ctx.directory, self.user, address)

    def _complete_submission(self) -> bool:
        """RFC 6409: check From:, add a missing Message-ID: and Date:; False if refused."""
        assert self._spool is not None
        at, hostname = self._received_len, self.ctx.hostname
        if not submission.complete_header(self._spool, at, hostname, self._may_send_as):
            self.count_refusal("auth")
            self._reset()
            self.error(553, f"5.7.1 From: must be your own address or alias, {self.user}")
            return False
        return True

    @inlineCallbacks
    def _deliver(self) -> Deferred[None]:
        spool = self._spool
        assert spool is not None
        txn = Transaction(
            id=self.queue_id,
            sender=self.sender or "",
            recipients=self.recipients,
            mail_params=self.mail_params,
            utf8=self.utf8,
            size=spool.size,
            arrival=self._arrival,
            junk=bool(self._verdicts.junk),
            junk_recipients=frozenset(self._verdicts.junk_recipients),
            authenticated=self.user is not None,
            via=self._via(),
            client=str(getattr(self.transport and self.transport.getPeer(), "host", "")),
            user=self.user or "",
        )
        try:
            source = spool.source()
            on_disk = spool.on_disk()
            if on_disk is not None and not HAVE_SYNCFS:  # else the commit's syncfs covers it
                yield deferToThread(os.fsync, on_disk.fileno())
            results = yield self.ctx.delivery.deliver(txn, source)
            if (txn.junk or txn.junk_recipients) and self.ctx.checks is not None:
                self._filed(txn, results)
            if all(r.ok for r in results):
                try:
                    yield self.ctx.delivery.report_success(txn, source)
                except Exception:
                    log.failure("could not queue the delivery report for {id}", id=self.queue_id)
            self.report(results)
            if self.user is not None and all(r.ok for r in results):
                yield self._after_submission(source)
        finally:
            self._reset()

    def _via(self) -> str:
        """How this session's mail came, for the vault (VaultEnvelope.via)."""
        if self.protocol_name == "LMTP":
            return "lmtp"
        return "submission" if self.ctx.submission else "smtp"

    def _filed(self, txn: Transaction, results: list[DeliveryResult]) -> None:
        """Tell the chain whose Junk folder the message went into (the filter log)."""
        assert self.ctx.checks is not None
        mailboxes: dict[str, list[str]] = {}
        for a, result in zip(self.recipients, results, strict=True):
            for m in a.recipient.mailboxes if result.ok else ():
                if txn.junk_for(m):
                    mailboxes.setdefault(m, []).append(a.recipient.address)
        if mailboxes:
            self.ctx.checks.filed(self.mail_context, self._verdicts, mailboxes)

    def _after_submission(self, source: bytes | Path) -> Deferred[None]:
        assert self.user is not None
        sent: str | None = None
        if self.ctx.save_sent:
            # RFC 6154: the user's \Sent folder, whatever it is called ("Sent Items"...).
            try:
                sent = special_folder(self.ctx.store.user(self.user), "\\Sent", "Sent")
            except Exception:
                log.failure("no Sent folder for {user}", user=self.user)
        return submission.after_submission(
            self.user,
            source,
            [a.recipient.address for a in self.recipients],
            self.ctx.rates,
            self.ctx.store,
            sent,
            self.ctx.contacts,
            sum(submission.rate_weight(a.recipient) for a in self.recipients),
        )

    def report(self, results: list[DeliveryResult]) -> None:
        """SMTP answers DATA once for all recipients (RFC 5321 §4.2.5): all or nothing.  When
        every recipient was refused for good (a list's size limit), that refusal is the
        answer, so the client returns the mail instead of trying again."""
        if all(r.ok for r in results):
            self.ctx.metrics.accepted(self.listener_name())
            self.reply(250, f"2.0.0 Ok: queued as {self.queue_id}")
        elif results and all(r.code >= 500 for r in results):
            self.count_refusal("other")
            self.reply(results[0].code, f"{results[0].status} {results[0].text}")
        else:
            self.count_refusal("other")
            self.reply(451, "4.3.0 Local delivery failed, try again later")

    def do_RSET(self, arg: str) -> None:
        self._reset()
        self.reply(250, "2.0.0 Ok")

    def do_NOOP(self, arg: str) -> None:
        self.reply(250, "2.0.0 Ok")

    def do_VRFY(self, arg: str) -> None:
        self.reply(252, "2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    def do_HELP(self, arg: str) -> None:
        self.reply(214, "2.0.0 See RFC 5321")

    def do_QUIT(self, arg: str) -> None:
        self.reply(221, "2.0.0 Bye")
        self.close()

    COMMANDS = {
        "EHLO": do_EHLO,
        "HELO": do_HELO,
        "STARTTLS": do_STARTTLS,
        "AUTH": do_AUTH,
        "MAIL": do_MAIL,
        "RCPT": do_RCPT,
        "DATA": do_DATA,
        "BDAT": do_BDAT,
        "RSET": do_RSET,
        "NOOP": do_NOOP,
        "VRFY": do_VRFY,
        "HELP": do_HELP,
        "QUIT": do_QUIT,
    }
