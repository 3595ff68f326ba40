"""The SMTP client the outbound queue sends with (RFC 5321, ESMTP).

One :class:`ClientSession` is one connection to one mail host.  It can carry several messages
(``MAIL``/``RCPT``/``DATA`` repeated, RFC 5321 §3.3), pipelines ``MAIL`` and ``RCPT`` when the
server offers PIPELINING (RFC 2920), upgrades to TLS when the server offers STARTTLS (RFC 3207;
opportunistic, RFC 7435, unless the route requires TLS) and authenticates to a smart host
(RFC 4954, only over TLS).  Every reply is bounded in length and number of lines and waited for
with a time-out, so a stuck or hostile server costs one connection slot, not the queue.

Results are per recipient: a ``RCPT`` refusal affects that recipient only; a refusal of
``MAIL`` or ``DATA`` affects every recipient of the message (RFC 5321 §4.2.5).
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from ourmail.dsnparams import NO_MAIL_PARAMS, MailParams, RcptParams, xtext_encode
from ourmail.net.dotstuff import stuffed

#: RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; we allow some slack.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
_DONE = Failure(ConnectionDone())
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@attrs.frozen
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def status(self) -> str:
        """The RFC 3463 code: the reply's own (RFC 2034), else one implied by the reply code."""
        m = _ENHANCED.match(self.lines[0]) if self.lines else None
        if m and m.group(1) == str(self.code)[0]:
            return m.group(0)
        return f"{str(self.code)[0]}.0.0"

    @property
    def diagnostic(self) -> str:
        return f"{self.code} {self.text}"[:900]


class SessionError(Exception):
    """The session cannot go on; ``status`` says whether that is temporary (4) or not (5)."""

    def __init__(self, status: str, diagnostic: str) -> None:
        super().__init__(f"{status} {diagnostic}")
        self.status = status
        self.diagnostic = diagnostic


@attrs.frozen
class Outgoing:
    """One message to send on a session."""

    sender: str
    recipients: Sequence[tuple[str, RcptParams]]
    content: bytes
    dsn: MailParams = NO_MAIL_PARAMS
    utf8: bool = False
    eight_bit: bool = False
    #: Header fields sent on top of :attr:`content` for this transaction only (a VERP
    #: copy's own fields and DKIM signature), so the shared content is not copied each time.
    prefix: bytes = b""

    @property
    def size(self) -> int:
        return len(self.prefix) + len(self.content)


@attrs.frozen
class RcptResult:
    address: str
    ok: bool
    status: str
    diagnostic: str
    #: The server offered DSN, so notifications are its business from now on (RFC 3461 §4).
    dsn_passed: bool = False


class ReplyReader(LineOnlyReceiver):
    """Reads SMTP replies and hands each one to the oldest waiting Deferred."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_REPLY_LINE

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self._waiting: deque[Deferred[Reply]] = deque()
        self._lines: list[str] = []
        self._lost: Failure | None = None
        #: The next reply is STARTTLS's: whatever arrives with it was sent in plaintext.
        self._tls_next = False
        self._discard = False

    def expect(self, timeout: float | None = None) -> Deferred[Reply]:
        d: Deferred[Reply] = Deferred()
        if self._lost is not None:
            d.errback(self._lost)
            return d
        self._waiting.append(d)
        d.addTimeout(timeout or self.timeout, self.clock, self._timed_out)
        return d

    def _timed_out(self, result: object, timeout: float) -> object:
        self.transport.abortConnection()  # type: ignore[union-attr]
        return result

    def send(self, line: str, timeout: float | None = None) -> Deferred[Reply]:
        self.transport.write(line.encode("utf-8") + b"\r\n")  # type: ignore[union-attr]
        return self.expect(timeout)

    def send_starttls(self) -> Deferred[Reply]:
        """STARTTLS; anything the server sends after its reply and before the handshake is
        thrown away, so a man in the middle cannot inject replies that we would then read as
        the server's answers inside TLS (the "response injection" of the 2021 NO STARTTLS
        study, RFC 3207 §4.2)."""
        self._tls_next = True
        return self.send("STARTTLS")

    def dataReceived(self, data: bytes) -> None:
        self._discard = False
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._discard:
            return
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
            self._bad_reply()
            return
        self._lines.append(text[4:])
        if len(self._lines) > MAX_REPLY_LINES:
            self._bad_reply()
            return
        if len(text) == 3 or text[3] == " ":
            reply = Reply(int(text[:3]), tuple(self._lines))
            self._lines = []
            if self._tls_next:
                self._tls_next = False
                self._discard = True  # the rest of this read ...
                self._buffer = b""  # ... and its partial last line (LineOnlyReceiver's)
            if self._waiting:
                self._waiting.popleft().callback(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._bad_reply()

    def _bad_reply(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self._lost = reason
        while self._waiting:
            self._waiting.popleft().errback(reason)


class ClientSession:
    """The dialogue on one connection, after the transport is connected."""

    def __init__(self, proto: ReplyReader, host: str, helo: str) -> None:
        self.proto = proto
        self.host = host
        self.helo = helo
        self.extensions: dict[str, str] = {}
        self.tls = False

    def _check(self, reply: Reply, what: str) -> None:
        if reply.code >= 400:
            raise SessionError(reply.status, f"{reply.diagnostic} (in reply to {what})")

    async def greet(self) -> None:
        self._check(await self.proto.expect(), "the greeting")
        await self._ehlo()

    async def _ehlo(self) -> None:
        reply = await self.proto.send(f"EHLO {self.helo}")
        if reply.code >= 500:  # RFC 5321 §3.2: an old server, try HELO
            reply = await self.proto.send(f"HELO {self.helo}")
            self._check(reply, "HELO")
            self.extensions = {}
            return
        self._check(reply, "EHLO")
        remote_name = reply.lines[0].split(" ")[0].lower() if reply.lines else ""
        if remote_name == self.helo.lower():
            # RFC 5321 §5.1: the MX is this very server; sending would loop.
            raise SessionError("5.4.6", f"mail for {self.host} loops back to myself")
        self.extensions = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.partition(" ")
            self.extensions[keyword.upper()] = params

    async def starttls(self, options: Any, optional: bool = False) -> bool:
        """RFC 3207: upgrade, then forget what the server said before (§4.2) and EHLO again.

        When ``optional``, a refusal of STARTTLS (454) leaves the session in plaintext (§4) and
        returns False.  A failed handshake drops the connection: an exception.
        """
        reply = await self.proto.send_starttls()
        if reply.code != 220 and optional:
            return False
        self._check(reply, "STARTTLS")
        self.proto.transport.startTLS(options)  # type: ignore[union-attr]
        self.tls = True
        await self._ehlo()
        return True

    async def authenticate(self, username: str, password: str) -> None:
        """RFC 4954 AUTH PLAIN (or LOGIN when PLAIN is not offered); never logs the secret."""
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            reply = await self.proto.send(f"AUTH PLAIN {token}")
        elif "LOGIN" in mechanisms:
            reply = await self.proto.send("AUTH LOGIN")
            if reply.code == 334:
                reply = await self.proto.send(base64.b64encode(username.encode()).decode())
            if reply.code == 334:
                reply = await self.proto.send(base64.b64encode(password.encode()).decode())
        else:
            raise SessionError("4.7.0", f"{self.host} offers no AUTH PLAIN or LOGIN")
        if reply.code != 235:
            # A refused login is our configuration's fault: keep the mail and retry.
            raise SessionError("4.7.0", f"{reply.diagnostic} (in reply to AUTH)")

    def _mail_command(self, msg: Outgoing) -> str:
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={msg.size}")  # RFC 1870
        if msg.eight_bit and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")  # RFC 6152
        if msg.utf8:
            params.append("SMTPUTF8")  # RFC 6531 §3.4
        if "DSN" in self.extensions:  # RFC 3461 §4.3, §4.4
            if msg.dsn.ret:
                params.append(f"RET={msg.dsn.ret}")
            if msg.dsn.envid:
                params.append(f"ENVID={xtext_encode(msg.dsn.envid)}")
        return " ".join([f"MAIL FROM:<{msg.sender}>", *params])

    def _rcpt_command(self, address: str, dsn: RcptParams) -> str:
        params = []
        if "DSN" in self.extensions:
            if dsn.notify is not None:
                params.append("NOTIFY=" + (",".join(sorted(dsn.notify)) or "NEVER"))
            if dsn.orcpt:
                kind, _, value = dsn.orcpt.partition(";")
                params.append(f"ORCPT={kind};{xtext_encode(value)}")
        return " ".join([f"RCPT TO:<{address}>", *params])

    def _refuse_all(self, msg: Outgoing, status: str, diagnostic: str) -> list[RcptResult]:
        return [RcptResult(a, False, status, diagnostic) for a, _ in msg.recipients]

    async def send(self, msg: Outgoing) -> list[RcptResult]:
        """Send one message; one result per recipient, in order."""
        if msg.utf8 and "SMTPUTF8" not in self.extensions:
            # RFC 6531 §3.2: no downgrade here; the message cannot go this way.
            why = f"{self.host} does not support SMTPUTF8, which this message needs"
            return self._refuse_all(msg, "5.6.7", why)
        limit = self.extensions.get("SIZE", "")
        if limit.isdigit() and 0 < int(limit) < msg.size:
            why = f"{self.host} accepts at most {limit} bytes"
            return self._refuse_all(msg, "5.3.4", why)
        commands = [self._mail_command(msg)]
        commands += [self._rcpt_command(a, p) for a, p in msg.recipients]
        if "PIPELINING" in self.extensions:
            replies = await defer.gatherResults([self.proto.send(c) for c in commands])
        else:
            replies = [await self.proto.send(commands[0])]
            if replies[0].code < 400:
                replies += [await self.proto.send(c) for c in commands[1:]]
        mail = replies[0]
        if mail.code >= 400:
            await self.reset()
            return self._refuse_all(msg, mail.status, mail.diagnostic)
        rcpt_replies = replies[1:]
        accepted = [r.code < 400 for r in rcpt_replies]
        if not any(accepted):
            await self.reset()
            return [
                RcptResult(a, False, r.status, r.diagnostic)
                for (a, _), r in zip(msg.recipients, rcpt_replies, strict=True)
            ]
        data = await self.proto.send("DATA", timeout=120)  # RFC 5321 §4.5.3.2.2
        if data.code != 354:
            await self.reset()
            status = data.status if data.code >= 400 else "4.0.0"
            return self._refuse_all(msg, status, data.diagnostic)
        for chunk in stuffed((msg.prefix, msg.content)):
            self.proto.transport.write(chunk)  # type: ignore[union-attr]
        final = await self.proto.expect(timeout=600)  # RFC 5321 §4.5.3.2.6
        dsn = "DSN" in self.extensions
        results = []
        for (address, _), reply, ok in zip(msg.recipients, rcpt_replies, accepted, strict=True):
            if not ok:
                results.append(RcptResult(address, False, reply.status, reply.diagnostic))
            else:
                good = final.code < 400
                results.append(RcptResult(address, good, final.status, final.diagnostic, dsn))
        return results

    async def reset(self) -> None:
        reply = await self.proto.send("RSET")
        self._check(reply, "RSET")

    async def quit(self) -> None:
        with contextlib.suppress(Exception):  # the server may close first; nothing is at stake
            await self.proto.send("QUIT", timeout=10)
        self.proto.transport.loseConnection()  # type: ignore[union-attr]
