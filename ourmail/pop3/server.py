"""The POP3 server: RFC 1939, CAPA and response codes (RFC 2449, RFC 3206), SASL PLAIN
(RFC 5034), STLS (RFC 2595).

Implementation notes (keep these true when changing this module):

* A deletion is what the user's policy says (``policy.py``): by default ``hide``, which never
  erases mail.  It happens at QUIT only (the UPDATE state, RFC 1939 §6); a dropped connection
  deletes nothing.
* The maildrop is the INBOX as it was at login and is locked for the session (``maildrop.py``).
* USER, PASS and AUTH only under TLS: before STLS, CAPA lists STLS instead of USER and SASL
  (RFC 2595 §4) and they answer ``-ERR [AUTH]``.
* Messages are stored with CRLF; RETR and TOP byte-stuff lines that start with ``.`` (RFC 1939
  §3) and change nothing else.  They stream from the message's buffer (a memory map when
  large) as the connection drains.
* Error replies never carry Python error text: internal errors are logged and answered
  ``-ERR [SYS/TEMP]`` (RFC 3206).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime

from ourmail.auth.accounts import AccountDB
from ourmail.auth.login import Authenticator, LoginFailed, LoginUnavailable, Session
from ourmail.auth.sasl import decode_plain
from ourmail.config import Limits, Pop3Settings
from ourmail.interfaces import IRetention, IUserStore
from ourmail.logs import events
from ourmail.mime.content import STREAM_AT, Span
from ourmail.net.dotstuff import stuffed
from ourmail.net.lineproto import LineProtocol
from ourmail.pop3.maildrop import Entry, Maildrop, MaildropLocks
from ourmail.pop3.policy import deletion_policy


@attrs.frozen
class POP3Context:
    """What every POP3 connection of the process shares."""

    hostname: str
    limits: Limits
    authenticator: Authenticator
    tls_context: IOpenSSLServerConnectionCreator
    settings: Pop3Settings
    accounts: AccountDB
    retention: IRetention
    locks: MaildropLocks
    clock: IReactorTime
    #: address -> time of the last successful login (RFC 2449 §6.5 LOGIN-DELAY)
    last_login: dict[str, float]
    implicit_tls: bool = False


class POP3Server(LineProtocol):
    """One POP3 session."""

    idle_timeout = 600  # RFC 1939 §3: at least 10 minutes

    def __init__(self, ctx: POP3Context) -> None:
        super().__init__(ctx.limits, ctx.tls_context, ctx.implicit_tls)
        self.ctx = ctx
        self.username: str | None = None
        self.user: IUserStore | None = None
        self.maildrop: Maildrop | None = None
        self._sasl: Callable[[bytes], None] | None = None

    def ok(self, text: str = "") -> None:
        self.write(f"+OK {text}".rstrip().encode("utf-8") + b"\r\n")

    def err(self, text: str) -> None:
        self.write(f"-ERR {text}".encode() + b"\r\n")
        self.count_error()

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.refuse():
            return
        self.log.info("pop3 connection from {peer}", peer=self.peer)
        self.ok(f"{self.ctx.hostname} ourmail POP3 ready")

    def connectionLost(self, reason: Any = None) -> None:
        if self.user is not None:
            self.ctx.locks.release(self.user.address)  # no UPDATE state: nothing is deleted
            self.user = None
        super().connectionLost(reason)  # last: it ends the login (the realm's logout)

    def send_goodbye_timeout(self) -> None:
        self.err("Idle timeout")

    def send_refusal(self, why: str) -> None:
        self.write(f"-ERR [SYS/TEMP] {why}, try again later\r\n".encode())  # RFC 3206

    def line_too_long(self) -> None:
        self._sasl = None
        self.err("Line too long")

    def internal_error(self) -> None:
        self.write(b"-ERR [SYS/TEMP] Internal error; try again later\r\n")

    def too_many_errors(self) -> None:
        self.write(b"-ERR Too many errors, closing connection\r\n")

    def say_goodbye_before_login(self) -> None:
        self.write(b"-ERR Too many commands before login, closing connection\r\n")

    def line_received(self, line: bytes) -> None:
        if self._sasl is not None:
            step, self._sasl = self._sasl, None
            step(line)
            return
        if self.user is None and self.too_many_before_login():
            return
        text = line.decode("utf-8", "replace")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        table = self.TRANSACTION if self.user is not None else self.AUTHORIZATION
        handler = table.get(verb)
        if handler is None:
            known = verb in self.TRANSACTION or verb in self.AUTHORIZATION
            self.err("Command not valid in this state" if known else "Unknown command")
            return
        self._run(handler(self, arg.strip()))

    def _run(self, result: Deferred[None] | None) -> None:
        if isinstance(result, Deferred):
            self.pause()
            result.addErrback(self.fail)
            result.addBoth(lambda _: self.resume())

    # -- AUTHORIZATION -----------------------------------------------------------------------

    def do_CAPA(self, arg: str) -> None:
        """RFC 2449 §5; EXPIRE NEVER: ourmail never removes mail on its own."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.ctx.settings.login_delay:
            caps.append(f"LOGIN-DELAY {self.ctx.settings.login_delay}")
        if self.user is None:
            caps += ["USER", "SASL PLAIN"] if self.secure else ["STLS"]
        caps.append("IMPLEMENTATION ourmail")
        self.ok("Capability list follows")
        self.write("".join(f"{c}\r\n" for c in caps).encode() + b".\r\n")

    def do_STLS(self, arg: str) -> None:
        if self.secure:
            self.err("TLS is already active")
            return
        self.ok("Begin TLS negotiation")
        self.start_tls()

    def do_USER(self, arg: str) -> None:
        if not self.secure:
            self.err("[AUTH] USER is disabled until STLS")
        elif not arg:
            self.err("USER needs a name")
        else:
            self.username = arg
            self.ok("Send PASS")

    def do_PASS(self, arg: str) -> Deferred[None] | None:
        if not self.secure:
            events.login("pop3", self.peer, "", "USER", events.NO_TLS)
            self.err("[AUTH] PASS is disabled until STLS")
            return None
        if self.username is None:
            self.err("USER first")
            return None
        username, self.username = self.username, None
        return self._login(username, arg, "USER")

    def do_AUTH(self, arg: str) -> None:
        """RFC 5034: AUTH PLAIN, with or without an initial response; ``*`` cancels."""
        mechanism, _, initial = arg.partition(" ")
        if not self.secure:
            events.login("pop3", self.peer, "", mechanism, events.NO_TLS)
            self.err("[AUTH] Authentication is disabled until STLS")
        elif mechanism.upper() != "PLAIN":
            self.err("Unsupported authentication mechanism")
        elif initial:
            self._plain(initial.encode())
        else:
            self.write(b"+ \r\n")
            self._sasl = self._plain

    def _plain(self, line: bytes) -> None:
        if line.strip() == b"*":
            self.err("Authentication cancelled")
            return
        plain = decode_plain(line)
        if plain is None:
            self.err("[AUTH] Bad PLAIN response")
            return
        if plain.for_someone_else:
            self.err("[AUTH] Cannot act as another user")
            return
        self._run(self._login(plain.authcid, plain.password, "PLAIN"))

    def _login(self, username: str, password: str, mechanism: str) -> Deferred[None]:
        login = self.ctx.authenticator.login(username, password, self.peer, "pop3", mechanism)
        return login.addCallbacks(self._logged_in, self._login_failed)

    def _login_failed(self, failure: Any) -> None:
        if failure.check(LoginUnavailable):  # RFC 3206 §4: the client should retry later
            self.err("[SYS/TEMP] Login temporarily unavailable, try again later")
            return
        failure.trap(LoginFailed)
        self.err("[AUTH] Authentication failed")

    def _logged_in(self, session: Session) -> None:
        self.at_close(session.end)
        # The account was disabled or deleted, or its password changed: POP3 has no
        # unsolicited reply, so the connection is closed without entering the UPDATE state
        # (RFC 1939 §6: messages marked deleted are kept).
        session.when_revoked(self.close)
        user: IUserStore = session.avatar
        address = user.address
        delay = self.ctx.settings.login_delay
        now = self.ctx.clock.seconds()
        last = self.ctx.last_login.get(address)
        if delay and last is not None and now - last < delay:
            session.end()
            self.err(f"[LOGIN-DELAY] Wait {int(delay - (now - last)) + 1} seconds between logins")
            return
        if not self.ctx.locks.acquire(address):
            session.end()
            self.err("[IN-USE] Maildrop is in use by another POP3 session")  # RFC 2449 §8.1.1
            return
        try:
            self.maildrop = Maildrop(user)
        except Exception:
            self.ctx.locks.release(address)
            session.end()
            raise
        self.user = user
        self.ctx.last_login[address] = now
        live = self.maildrop.live()
        total = sum(e.size for _, e in live)
        self.ok(f"Maildrop has {len(live)} messages ({total} octets)")

    @inlineCallbacks
    def do_QUIT(self, arg: str) -> Deferred[None]:
        if self.user is None or self.maildrop is None:
            self.ok("Bye")
            self.close()
            return
        user, self.user = self.user, None
        policy = deletion_policy(self.ctx.settings, self.ctx.accounts, user.address)
        try:
            removed = yield self.maildrop.update(policy, self.ctx.retention)
        except Exception:
            self.log.failure("pop3 update for {user} failed", user=user.address)
            self.write(b"-ERR [SYS/TEMP] Some deleted messages were not removed\r\n")
        else:
            self.log.info(
                "pop3 {user}: {n} messages deleted ({policy})",
                user=user.address,
                n=removed,
                policy=policy,
            )
            self.ok(f"Bye ({removed} messages deleted)")
        finally:
            self.ctx.locks.release(user.address)
        self.close()

    # -- TRANSACTION -------------------------------------------------------------------------

    def _entry(self, arg: str) -> Entry | None:
        assert self.maildrop is not None
        entries = self.maildrop.entries
        if not arg.isdigit() or not 0 < int(arg) <= len(entries):
            self.err("No such message")
            return None
        entry = entries[int(arg) - 1]
        if entry.deleted:
            self.err("Message is deleted")
            return None
        return entry

    def do_STAT(self, arg: str) -> None:
        assert self.maildrop is not None
        live = self.maildrop.live()
        self.ok(f"{len(live)} {sum(e.size for _, e in live)}")

    def _listing(self, arg: str, value: Callable[[Entry], str]) -> None:
        assert self.maildrop is not None
        if arg:
            entry = self._entry(arg)
            if entry is not None:
                self.ok(f"{int(arg)} {value(entry)}")
            return
        body = "".join(f"{n} {value(e)}\r\n" for n, e in self.maildrop.live())
        self.write(b"+OK Listing follows\r\n" + body.encode() + b".\r\n")

    def do_LIST(self, arg: str) -> None:
        self._listing(arg, lambda e: str(e.size))

    def do_UIDL(self, arg: str) -> None:
        self._listing(arg, lambda e: e.uidl)

    def _span(self, entry: Entry) -> Span | None:
        assert self.maildrop is not None
        try:
            data = self.maildrop.folder.message(entry.uid).buffer()
        except KeyError:
            self.err("Message was removed by another client")
            return None
        return Span(data, 0, len(data))

    def do_RETR(self, arg: str) -> Deferred[None] | None:
        entry = self._entry(arg)
        span = self._span(entry) if entry is not None else None
        if span is None:
            return None
        return self._send(f"+OK {span.size} octets\r\n".encode(), span)

    def do_TOP(self, arg: str) -> Deferred[None] | None:
        """RFC 1939 §7: the header, the blank line, and the first ``n`` body lines."""
        num, _, count = arg.partition(" ")
        if not count.strip().isdigit():
            self.err("TOP needs a message number and a line count")
            return None
        entry = self._entry(num)
        span = self._span(entry) if entry is not None else None
        if span is None:
            return None
        data, lines = span.buf, int(count)
        sep = data.find(b"\r\n\r\n")
        end = len(data) if sep < 0 else sep + 4
        while lines > 0 and end < len(data):
            nxt = data.find(b"\r\n", end)
            end = len(data) if nxt < 0 else nxt + 2
            lines -= 1
        return self._send(b"+OK Top of message follows\r\n", Span(data, 0, end))

    def _send(self, head: bytes, span: Span) -> Deferred[None] | None:
        """The reply line and the stuffed message: in one write when small, else streamed as
        the connection drains (a producer costs a reactor turn per message)."""
        if span.size < STREAM_AT:
            self.write(head + b"".join(stuffed(span.chunks())))
            return None
        self.write(head)
        return self.write_chunks(stuffed(span.chunks()))

    def do_DELE(self, arg: str) -> None:
        entry = self._entry(arg)
        if entry is not None:
            entry.deleted = True
            self.ok(f"Message {int(arg)} deleted")

    def do_RSET(self, arg: str) -> None:
        assert self.maildrop is not None
        for e in self.maildrop.entries:
            e.deleted = False
        self.ok(f"Maildrop has {len(self.maildrop.entries)} messages")

    def do_NOOP(self, arg: str) -> None:
        self.ok()

    AUTHORIZATION = {
        "CAPA": do_CAPA,
        "STLS": do_STLS,
        "USER": do_USER,
        "PASS": do_PASS,
        "AUTH": do_AUTH,
        "QUIT": do_QUIT,
    }
    TRANSACTION = {
        "CAPA": do_CAPA,
        "STAT": do_STAT,
        "LIST": do_LIST,
        "UIDL": do_UIDL,
        "RETR": do_RETR,
        "TOP": do_TOP,
        "DELE": do_DELE,
        "RSET": do_RSET,
        "NOOP": do_NOOP,
        "QUIT": do_QUIT,
    }
