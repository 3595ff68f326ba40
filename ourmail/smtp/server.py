"""The ESMTP server (RFC 5321) for the MX, submission and submissions listeners.

Implementation notes (keep these true when changing this module):

* ``250`` after DATA is sent only after every recipient's copy is durable: the message is
  streamed into a spool file, hard-linked (or copied) into each recipient's Maildir ``tmp/``,
  renamed into ``new/``, and the group commit's ``syncfs`` flushes all of it (see
  ``store/committer.py``; without syncfs the spool file is fsynced first).
* The end of DATA is ``CRLF . CRLF`` and nothing else: a bare LF before or after the dot never ends
  the message (SMTP smuggling).  Bare CR and LF inside the message are stored as CRLF.
* Never an open relay: a recipient in a domain that is not local is refused unless the session
  is authenticated (submission); then it goes to the outbound queue, as do an alias's forwards.
  ``250`` after DATA waits for the queue files to be durable too.
* DSN (RFC 3461): RET, ENVID, NOTIFY and ORCPT are checked here and travel with the message;
  a local delivery whose recipient asked NOTIFY=SUCCESS queues a "delivered" report.
* AUTH is offered only on submission listeners and only under TLS (RFC 4954 §4, RFC 8314).
* Memory per connection is bounded: command lines by ``max_line_length``, DATA by streaming to
  disk with at most one line (capped) held, message size by ``max_message_size``.
* Replies carry RFC 3463 enhanced status codes (RFC 2034).
"""

from __future__ import annotations

import email.utils
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from ourmail.addresses import AddressError, normalise_address
from ourmail.auth.login import Authenticator, LoginFailed, LoginUnavailable, Session
from ourmail.auth.sasl import decode_base64, decode_plain
from ourmail.config import Limits
from ourmail.fsutil import HAVE_SYNCFS
from ourmail.interfaces import DirectoryUnavailable, IDirectory, IMailStore, Recipient
from ourmail.net.lineproto import LineProtocol
from ourmail.smtp import dsn, submission
from ourmail.smtp.queue import OutboundQueue
from ourmail.smtp.spool import Spool
from ourmail.smtp.submission import SendingRates
from ourmail.store.maildir import to_crlf
from ourmail.store.quota import QuotaPolicy

log = Logger()

_PATH_RE = re.compile(r"^(?P<kw>FROM|TO):\s*<(?P<path>[^<>]*)>(?P<params>.*)$", re.I)
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3
#: Longest line kept in memory while looking for the end of DATA (longer ones are streamed).
_DATA_HOLD = 1 << 20


@attrs.frozen
class SMTPContext:
    """What every SMTP connection of one listener shares."""

    hostname: str
    primary_domain: str
    limits: Limits
    directory: IDirectory
    store: IMailStore
    authenticator: Authenticator
    spool_dir: Path
    tls_context: IOpenSSLServerConnectionCreator
    quota: QuotaPolicy
    submission: bool = False
    implicit_tls: bool = False
    #: Submission only: hourly sending limits, and whether to keep a copy in Sent.
    rates: SendingRates | None = None
    save_sent: bool = False
    #: Where mail for other domains goes; None: nowhere (refused).
    queue: OutboundQueue | None = None


@attrs.frozen
class Accepted:
    """A recipient accepted in this transaction, with its DSN parameters."""

    recipient: Recipient
    params: dsn.RcptParams


def parse_path(arg: str, keyword: str) -> tuple[str, dict[str, str | None]]:
    """``FROM:<a@b> SIZE=10`` -> ("a@b", {"SIZE": "10"}); ValueError on bad syntax.

    A source route (``<@relay:user@domain>``) is dropped, as RFC 5321 §4.1.1.3 allows.
    """
    m = _PATH_RE.match(arg.strip())
    if not m or m.group("kw").upper() != keyword:
        raise ValueError(arg)
    path = m.group("path").strip()
    if path.startswith("@"):
        path = path.partition(":")[2]
    if len(path) > MAX_PATH or any(c.isspace() or ord(c) < 32 for c in path):
        raise ValueError(arg)
    params: dict[str, str | None] = {}
    for item in m.group("params").split():
        key, eq, value = item.partition("=")
        params[key.upper()] = value if eq else None
    return path, params


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
        self._reset()

    # -- plumbing ------------------------------------------------------------------------

    def reply(self, code: int, text: str | list[str]) -> None:
        lines = [text] if isinstance(text, str) else text
        out = [f"{code}-{t}" for t in lines[:-1]] + [f"{code} {lines[-1]}"]
        self.write("".join(f"{line}\r\n" for line in out).encode("utf-8"))

    #: The protocol's name in the greeting and in Received: (RFC 3848).
    protocol_name = "ESMTP"

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.refuse():
            return
        self.log.info("{proto} connection from {peer}", proto=self.protocol_name, peer=self.peer)
        self.reply(220, f"{self.ctx.hostname} {self.protocol_name} ourmail")

    def send_refusal(self, why: str) -> None:
        self.reply(421, f"4.7.0 {self.ctx.hostname} {why}, try again later")  # RFC 5321 §3.8

    def connectionLost(self, reason: object = None) -> None:
        super().connectionLost(reason)
        self._discard_spool()

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
        self.sender: str | None = None
        self.utf8 = False
        self.declared_size = 0
        self.mail_params = dsn.MailParams()
        self.recipients: list[Accepted] = []
        self._discard_spool()
        self._spool: Spool | None = None
        self._chunk_left: int | None = None
        self._chunk_last = False
        self._skipping = False
        self._cr_pending = False

    def _discard_spool(self) -> None:
        spool = getattr(self, "_spool", None)
        if spool is not None:
            spool.discard()
            self._spool = None

    def _async(self, d: Deferred[object]) -> None:
        """Hold input until ``d`` is done; failures become 451 and a logged traceback."""
        self.pause()
        d.addErrback(self.fail)
        d.addBoth(lambda _: self.resume())

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
            ext.append("AUTH PLAIN LOGIN")  # RFC 4954
        return ext

    def do_HELO(self, arg: str) -> None:
        if not arg:
            self.error(501, "5.5.4 HELO needs a domain")
            return
        self.helo, self.esmtp = arg.split()[0][:255], False
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
            self.error(538, "5.7.11 Encryption required for requested authentication mechanism")
            return
        if self.user is not None:
            self.error(503, "5.5.1 Already authenticated")
            return
        if self.sender is not None:
            self.error(503, "5.5.1 AUTH not allowed during a mail transaction")
            return
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        if mech == "PLAIN":
            if initial:
                self._auth_plain(initial.strip())
            else:
                self.reply(334, "")
                self._continuation = self._auth_plain
        elif mech == "LOGIN":
            if initial:
                self._auth_login_user(initial.strip())
            else:
                self.reply(334, "VXNlcm5hbWU6")
                self._continuation = self._auth_login_user
        else:
            self.error(504, "5.5.4 Unrecognized authentication type")

    def _auth_plain(self, text: str) -> None:
        if text == "*":
            self.error(501, "5.7.0 Authentication cancelled")
            return
        plain = decode_plain(text)
        if plain is None:
            self.error(501, "5.5.2 Cannot decode the PLAIN response")
            return
        if plain.for_someone_else:
            self.error(535, "5.7.8 Authentication credentials invalid")
            return
        self._authenticate(plain.authcid, plain.password)

    def _auth_login_user(self, text: str) -> None:
        username = None if text == "*" else decode_base64(text)
        if username is None:
            self.error(501, "5.5.2 Cannot decode the LOGIN response")
            return
        self.reply(334, "UGFzc3dvcmQ6")
        self._continuation = lambda t: self._auth_login_password(username, t)

    def _auth_login_password(self, username: str, text: str) -> None:
        password = None if text == "*" else decode_base64(text)
        if password is None:
            self.error(501, "5.5.2 Cannot decode the LOGIN response")
            return
        self._authenticate(username, password)

    def _authenticate(self, username: str, password: str) -> None:
        d = self.ctx.authenticator.login(username, password, self.peer, "smtp")

        def ok(session: Session) -> None:
            self.at_close(session.end)
            self.user = session.avatar.address
            self.reply(235, "2.7.0 Authentication successful")

        def failed(f: object) -> None:
            if f.check(LoginUnavailable):  # type: ignore[attr-defined]
                self.error(454, "4.7.0 Temporary authentication failure")  # RFC 4954 §6
                return
            f.trap(LoginFailed)  # type: ignore[attr-defined]
            self.error(535, "5.7.8 Authentication credentials invalid")

        self._async(d.addCallbacks(ok, failed))

    def do_MAIL(self, arg: str) -> None:
        if self.helo is None:
            self.error(503, "5.5.1 Say EHLO first")
            return
        if self.ctx.submission and self.user is None:
            self.error(530, "5.7.0 Authentication required")
            return
        if self.sender is not None:
            self.error(503, "5.5.1 Nested MAIL command")
            return
        try:
            path, params = parse_path(arg, "FROM")
        except ValueError:
            self.error(501, "5.5.4 Syntax: MAIL FROM:<address> [parameters]")
            return
        if self.user is not None:
            if not self._may_send_as(path):  # RFC 6409 §6.1: the user's own address or alias
                self.error(553, f"5.7.1 <{path}>: Sender address not owned by {self.user}")
                return
            if self.ctx.rates is not None and not self.ctx.rates.may_send(self.user):
                self.reply(451, "4.7.1 Hourly sending limit reached, try again later")
                return
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit():
                    self.error(501, "5.5.4 SIZE needs a number")
                    return
                if int(value) > self.ctx.limits.max_message_size:
                    self.error(552, "5.3.4 Message size exceeds fixed maximum message size")
                    return
                self.declared_size = int(value)
            elif key == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    self.error(501, "5.5.4 BODY must be 7BIT or 8BITMIME")
                    return
            elif key == "SMTPUTF8":  # RFC 6531 §3.4
                if value is not None:
                    self.error(501, "5.5.4 SMTPUTF8 takes no value")
                    return
            elif key not in ("AUTH", "RET", "ENVID"):  # RFC 4954 §5: AUTH= may be ignored
                self.error(555, f"5.5.4 Unsupported parameter {key}")
                return
        try:
            self.mail_params = dsn.parse_mail_params(params.get("RET"), params.get("ENVID"))
        except dsn.DSNParamError as e:
            self.error(501, str(e))
            return
        self.utf8 = "SMTPUTF8" in params
        if not self.utf8 and not path.isascii():
            self.error(553, "5.6.7 Non-ASCII address without SMTPUTF8")  # RFC 6531 §3.7.4.1
            return
        self.sender = path
        self.reply(250, "2.1.0 Ok")

    def do_RCPT(self, arg: str) -> None:
        if self.sender is None:
            self.error(503, "5.5.1 Need MAIL before RCPT")
            return
        if len(self.recipients) >= self.ctx.limits.max_recipients:
            self.reply(452, "4.5.3 Too many recipients")
            return
        rates = self.ctx.rates
        if self.user and rates and not rates.may_send(self.user, len(self.recipients) + 1):
            self.reply(451, "4.7.1 Hourly recipient limit reached, try again later")
            return
        try:
            path, params = parse_path(arg, "TO")
        except ValueError:
            self.error(501, "5.5.4 Syntax: RCPT TO:<address>")
            return
        unknown = [k for k in params if k not in ("NOTIFY", "ORCPT")]
        if unknown:
            self.error(555, f"5.5.4 Unsupported parameter {unknown[0]}")
            return
        try:
            rcpt_params = dsn.parse_rcpt_params(params.get("NOTIFY"), params.get("ORCPT"))
        except dsn.DSNParamError as e:
            self.error(501, str(e))
            return
        if not self.utf8 and not path.isascii():
            self.error(553, f"5.6.7 <{path}>: Non-ASCII address without SMTPUTF8")
            return
        if path.lower() == "postmaster":  # RFC 5321 §4.5.1
            path = f"postmaster@{self.ctx.primary_domain}"
        try:
            address = normalise_address(path)
        except AddressError:
            domain = path.rpartition("@")[2].lower()
            if not self.ctx.directory.is_local_domain(domain) and self.user is None:
                self.error(554, f"5.7.1 <{path}>: Relay access denied")
            else:
                self.error(550, f"5.1.1 <{path}>: Recipient address rejected")
            return
        d = self.ctx.directory.lookup(address)
        d.addCallbacks(self._rcpt_known, self._rcpt_unresolved, (path, rcpt_params), None, (path,))
        self._async(d)

    def _rcpt_unresolved(self, failure: Failure, path: str) -> None:
        failure.trap(DirectoryUnavailable)
        # RFC 3463 §3.5: X.4.3 directory server failure; the sender retries.
        self.reply(451, f"4.4.3 <{path}>: Directory unavailable, try again later")

    def _rcpt_known(self, rcpt: Recipient, path: str, params: dsn.RcptParams) -> None:
        if rcpt.outbound and self.ctx.queue is None:
            self.error(550, f"5.7.1 <{path}>: Delivery to remote domains is not enabled here")
            return
        if rcpt.kind in ("user", "alias"):
            if not all(
                self.ctx.quota.fits(self.ctx.store.user(m), self.declared_size)
                for m in rcpt.mailboxes
            ):
                # RFC 3463 §3.3: X.2.2 mailbox full; temporary unless configured permanent.
                if self.ctx.quota.permanent:
                    self.error(552, f"5.2.2 <{path}>: Mailbox full")
                else:
                    self.reply(452, f"4.2.2 <{path}>: Mailbox full, try again later")
                return
            self._accept(rcpt, params)
        elif rcpt.kind == "unknown":
            self.error(550, f"5.1.1 <{path}>: Recipient address rejected: User unknown")
        elif self.user is None:
            self.error(554, f"5.7.1 <{path}>: Relay access denied")
        else:
            self._accept(rcpt, params)

    def _accept(self, rcpt: Recipient, params: dsn.RcptParams) -> None:
        if all(a.recipient.address != rcpt.address for a in self.recipients):
            self.recipients.append(Accepted(rcpt, params))
        self.reply(250, "2.1.5 Ok")

    def _transaction_ready(self) -> bool:
        if self.sender is None:
            self.error(503, "5.5.1 Need MAIL command")
            return False
        if not self.recipients:
            self.error(554, "5.5.1 No valid recipients")
            return False
        return True

    def _open_spool(self) -> None:
        self.queue_id = secrets.token_hex(8)
        self._arrival = time.time()
        self._spool = Spool(self.ctx.spool_dir, self.queue_id)
        received = self._received_header()
        self._spool.write(received)
        self._received_len = len(received)
        self._size = 0
        self._too_big = False
        self._first = True

    def do_DATA(self, arg: str) -> None:
        if not self._transaction_ready():
            return
        if self._spool is not None:  # BDAT started this transaction
            self.error(503, "5.5.1 DATA cannot follow BDAT")
            return
        self._open_spool()
        self._dbuf = b"\r\n"
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
            self.reply(552, "5.3.4 Chunk too large, closing connection")
            self.close()
            return
        if not self._transaction_ready():
            self._skip_chunk(size)  # RFC 3030 §2: the octets are read and discarded
            return
        if self._spool is None:
            self._open_spool()
            self._cr_pending = False
        self.setTimeout(self.ctx.limits.data_timeout)
        self._chunk_last = last
        if size:
            self._chunk_left = size
            self.set_raw_mode()
        else:
            self._chunk_done()

    def _skip_chunk(self, size: int) -> None:
        if size:
            self._chunk_left, self._chunk_last, self._skipping = size, False, True
            self.set_raw_mode()

    def _chunk_received(self, data: bytes) -> None:
        take, rest = data[: self._chunk_left], data[self._chunk_left :]
        self._chunk_left -= len(take)
        if not self._skipping:
            self._emit_chunk(take)
        if self._chunk_left:
            return
        self._chunk_left = None
        self.set_line_mode(rest)
        if self._skipping:
            self._skipping = False
        else:
            self._chunk_done()

    def _emit_chunk(self, part: bytes) -> None:
        """BDAT data is not dot-stuffed; a CR ending one chunk may pair with an LF starting the
        next, so it waits (RFC 3030 §3)."""
        if self._cr_pending:
            part, self._cr_pending = b"\r" + part, False
        if part.endswith(b"\r"):
            part, self._cr_pending = part[:-1], True
        self._store_part(to_crlf(part))

    def _chunk_done(self) -> None:
        if not self._chunk_last:
            self.setTimeout(self.idle_timeout)
            self.reply(250, f"2.0.0 {self._size} octets received")
            return
        if self._cr_pending:
            self._cr_pending = False
            self._store_part(b"\r\n")
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
        if self._chunk_left is not None:
            self._chunk_received(chunk)
            return
        buf = self._dbuf + chunk
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self._emit(buf[: end + 2])
            self._dbuf = b""
            self.set_line_mode(buf[end + 5 :])
            self._finish_data()
            return
        cut = buf.rfind(b"\r\n")
        if cut <= 0:
            if len(buf) < _DATA_HOLD:
                self._dbuf = buf
                return
            cut = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        self._emit(buf[:cut])
        self._dbuf = buf[cut:]

    def _emit(self, part: bytes) -> None:
        """Write DATA bytes: dot-unstuffed (RFC 5321 §4.5.2), CRLF-normalised, size-capped."""
        part = to_crlf(part.replace(b"\r\n..", b"\r\n."))
        if self._first:
            part, self._first = part[2:], False
        self._store_part(part)

    def _store_part(self, part: bytes) -> None:
        self._size += len(part)
        if self._size > self.ctx.limits.max_message_size:
            self._too_big = True
        elif self._spool is not None:
            self._spool.write(part)

    def _finish_data(self) -> None:
        self.setTimeout(self.idle_timeout)
        if self._too_big:
            self._reset()
            self.error(552, "5.3.4 Message size exceeds fixed maximum message size")
            return
        if self.user is not None and not self._complete_submission():
            return
        self._async(self._deliver())

    def _may_send_as(self, address: str) -> bool:
        assert self.user is not None
        try:
            return self.ctx.directory.may_send_as(self.user, normalise_address(address))
        except AddressError:
            return False

    def _complete_submission(self) -> bool:
        """RFC 6409: check From:, add a missing Message-ID: and Date:; False if refused."""
        assert self._spool is not None
        start = self._spool.head(self._received_len + submission.HEADER_LIMIT)
        header = submission.check_header(start, self._received_len)
        strangers = [a for a in header.from_addresses if not self._may_send_as(a)]
        if strangers or not header.from_addresses:
            self._reset()
            self.error(553, f"5.7.1 From: must be your own address or alias, {self.user}")
            return False
        if header.missing:
            fields = submission.added_fields(header.missing, self.ctx.hostname)
            self._spool.insert(self._received_len, fields)
        return True

    def _outbound(self) -> list[tuple[str, dsn.RcptParams]]:
        """Addresses for the queue; an alias's forwards remember the alias (RFC 3461 §4.2)."""
        out = []
        for a in self.recipients:
            for address in a.recipient.outbound:
                params = a.params
                if address != a.recipient.address and params.orcpt is None:
                    params = dsn.RcptParams(params.notify, f"rfc822;{a.recipient.address}")
                out.append((address, params))
        return out

    @inlineCallbacks
    def _deliver(self) -> Deferred[None]:
        spool = self._spool
        assert spool is not None
        accepted = self.recipients
        rcpts = [a.recipient.address for a in accepted]
        # Each mailbox gets one copy, however many recipients (aliases) lead to it.
        mailboxes = list(dict.fromkeys(m for a in accepted for m in a.recipient.mailboxes))
        outbound = self._outbound()
        try:
            source = spool.source()
            on_disk = spool.on_disk()
            if on_disk is not None and not HAVE_SYNCFS:  # else the commit's syncfs covers it
                yield deferToThread(os.fsync, on_disk.fileno())
            jobs = [self.ctx.store.user(m).deliver(source) for m in mailboxes]
            if outbound:
                assert self.ctx.queue is not None
                jobs.append(
                    self.ctx.queue.enqueue(
                        self.sender or "", outbound, source, self.mail_params, self.utf8
                    )
                )
            outcomes = yield defer.DeferredList(jobs, consumeErrors=True)
            by_mailbox = dict(zip(mailboxes, outcomes, strict=False))
            queued = outcomes[-1] if outbound else (True, None)
            for ok, outcome in outcomes:
                if not ok:
                    log.failure("delivery of {id} failed", outcome, id=self.queue_id)
            results = [
                next(
                    (by_mailbox[m] for m in a.recipient.mailboxes if not by_mailbox[m][0]),
                    queued if a.recipient.outbound else (True, None),
                )
                for a in accepted
            ]
            delivered = [m for m, (ok, _) in by_mailbox.items() if ok]
            if delivered:
                log.info(
                    "delivered {id} from <{sender}> to {rcpts} ({size} bytes)",
                    id=self.queue_id,
                    sender=self.sender,
                    rcpts=delivered,
                    size=spool.size,
                )
            if all(ok for ok, _ in results):
                yield self._report_success(source)
            self.report(rcpts, [(ok, outcome) for ok, outcome in results])
            if self.user is not None and all(ok for ok, _ in results):
                yield self._after_submission(source, len(rcpts))
        finally:
            self._reset()

    @inlineCallbacks
    def _report_success(self, source: bytes | Path) -> Deferred[None]:
        """RFC 3461 §5.2.2: a "delivered" report for final delivery here, when asked."""
        if self.ctx.queue is None:
            return
        here = [
            (a.recipient.address, a.params)
            for a in self.recipients
            if a.recipient.mailboxes and not a.recipient.outbound
        ]
        try:  # the queue skips a null sender and recipients who did not ask
            yield self.ctx.queue.report_delivered(
                self.sender or "", self.mail_params, self._arrival, source, here
            )
        except Exception:
            log.failure("could not queue the delivery report for {id}", id=self.queue_id)

    @inlineCallbacks
    def _after_submission(self, source: bytes | Path, recipients: int) -> Deferred[None]:
        assert self.user is not None
        if self.ctx.rates is not None:
            self.ctx.rates.record(self.user, recipients)
        if self.ctx.save_sent:
            try:
                yield self.ctx.store.user(self.user).deliver(source, "Sent", ["\\Seen"])
            except Exception:
                log.failure("could not keep a copy of {id} in Sent", id=self.queue_id)

    def report(self, rcpts: list[str], results: list[tuple[bool, Any]]) -> None:
        """SMTP answers DATA once for all recipients (RFC 5321 §4.2.5): all or nothing."""
        if all(ok for ok, _ in results):
            self.reply(250, f"2.0.0 Ok: queued as {self.queue_id}")
        else:
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
