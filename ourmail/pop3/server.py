"""The POP3 server (RFC 1939, CAPA RFC 2449, STLS RFC 2595).

Implementation notes (keep these true when changing this module):

* DELE never erases mail.  At QUIT the deleted messages get the ``$POP3Deleted`` keyword, which
  hides them from every later POP3 session while IMAP still sees them (retention comes later).
* The maildrop a session sees is the INBOX as it was at login, minus hidden messages; numbers
  and sizes do not change during the session (RFC 1939 §5).
* USER and PASS only under TLS: before STLS, CAPA does not list USER (RFC 2595 §4) and both
  answer ``-ERR [AUTH]``.
* Messages are stored with CRLF; RETR and TOP only byte-stuff lines that start with ``.``
  (RFC 1939 §3), so no line ending is ever changed.
* Error replies never carry Python error text: internal errors are logged and answered
  ``-ERR [SYS/TEMP]`` (RFC 3206).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator

from ourmail.auth.login import Authenticator, LoginFailed
from ourmail.config import Limits
from ourmail.interfaces import IFolder, IUserStore
from ourmail.net.lineproto import LineProtocol

#: The keyword a POP3 deletion sets (issue 6 keeps the name for its "hide" policy).
HIDDEN = "$POP3Deleted"


@attrs.frozen
class POP3Context:
    """What every POP3 connection of one listener shares."""

    hostname: str
    limits: Limits
    authenticator: Authenticator
    tls_context: IOpenSSLServerConnectionCreator
    implicit_tls: bool = False


@attrs.define
class _Entry:
    uid: int
    size: int
    uidl: str
    deleted: bool = False


def uidl_of(key: str) -> str:
    """A UIDL that stays the same for the life of the message: a digest of its stored name."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def stuff(data: bytes) -> bytes:
    """RFC 1939 §3 byte-stuffing of a CRLF message, with the terminating ``.`` line."""
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class POP3Server(LineProtocol):
    """One POP3 session."""

    idle_timeout = 600  # RFC 1939 §3: at least 10 minutes

    def __init__(self, ctx: POP3Context) -> None:
        super().__init__(ctx.limits, ctx.tls_context, ctx.implicit_tls)
        self.ctx = ctx
        self.username: str | None = None
        self.user: IUserStore | None = None
        self.folder: IFolder | None = None
        self.messages: list[_Entry] = []

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

    def send_goodbye_timeout(self) -> None:
        self.err("Idle timeout")

    def send_refusal(self, why: str) -> None:
        self.write(f"-ERR [SYS/TEMP] {why}, try again later\r\n".encode())  # RFC 3206

    def line_too_long(self) -> None:
        self.err("Line too long")

    def internal_error(self) -> None:
        self.write(b"-ERR [SYS/TEMP] Internal error; try again later\r\n")

    def too_many_errors(self) -> None:
        self.write(b"-ERR Too many errors, closing connection\r\n")

    def line_received(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        table = self.TRANSACTION if self.user is not None else self.AUTHORIZATION
        handler = table.get(verb)
        if handler is None:
            known = verb in self.TRANSACTION or verb in self.AUTHORIZATION
            self.err("Command not valid in this state" if known else "Unknown command")
            return
        result = handler(self, arg.strip())
        if isinstance(result, Deferred):
            self.pause()
            result.addErrback(self.fail)
            result.addBoth(lambda _: self.resume())

    # -- AUTHORIZATION -----------------------------------------------------------------------

    def do_CAPA(self, arg: str) -> None:
        caps = ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "IMPLEMENTATION ourmail"]
        if self.user is None:
            caps.append("USER" if self.secure else "STLS")
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
            self.err("[AUTH] PASS is disabled until STLS")
            return None
        if self.username is None:
            self.err("USER first")
            return None
        username, self.username = self.username, None
        return self.ctx.authenticator.login(username, arg, self.peer, "pop3").addCallbacks(
            self._logged_in, self._login_failed
        )

    def _login_failed(self, failure: Any) -> None:
        failure.trap(LoginFailed)
        self.err("[AUTH] Authentication failed")

    def _logged_in(self, user: IUserStore) -> None:
        folder = user.folder("INBOX")
        folder.sync()
        self.messages = []
        for uid in folder.uids():
            msg = folder.message(uid)
            if HIDDEN not in msg.flags:
                self.messages.append(_Entry(uid, msg.size, uidl_of(msg.key)))
        self.user, self.folder = user, folder
        total = sum(m.size for m in self.messages)
        self.ok(f"Maildrop has {len(self.messages)} messages ({total} octets)")

    def do_QUIT(self, arg: str) -> None:
        if self.user is not None and self.folder is not None:
            hidden = [m.uid for m in self.messages if m.deleted]
            if hidden:
                self.folder.store_flags(hidden, [HIDDEN], "+")
            self.log.info("pop3 {user} hid {n} messages", user=self.user.address, n=len(hidden))
        self.ok("Bye")
        self.close()

    # -- TRANSACTION -------------------------------------------------------------------------

    def _msg(self, arg: str) -> _Entry | None:
        if not arg.isdigit() or not 0 < int(arg) <= len(self.messages):
            self.err("No such message")
            return None
        entry = self.messages[int(arg) - 1]
        if entry.deleted:
            self.err("Message is deleted")
            return None
        return entry

    def do_STAT(self, arg: str) -> None:
        live = [m for m in self.messages if not m.deleted]
        self.ok(f"{len(live)} {sum(m.size for m in live)}")

    def _listing(self, arg: str, value: Callable[[_Entry], str]) -> None:
        if arg:
            entry = self._msg(arg)
            if entry is not None:
                self.ok(f"{arg} {value(entry)}")
            return
        self.ok("Listing follows")
        lines = [f"{n} {value(m)}\r\n" for n, m in enumerate(self.messages, 1) if not m.deleted]
        self.write("".join(lines).encode() + b".\r\n")

    def do_LIST(self, arg: str) -> None:
        self._listing(arg, lambda m: str(m.size))

    def do_UIDL(self, arg: str) -> None:
        self._listing(arg, lambda m: m.uidl)

    def _read(self, entry: _Entry) -> bytes | None:
        assert self.folder is not None
        try:
            return self.folder.message(entry.uid).read()
        except KeyError:
            self.err("Message was removed by another client")
            return None

    def do_RETR(self, arg: str) -> None:
        entry = self._msg(arg)
        data = self._read(entry) if entry is not None else None
        if data is not None:
            self.ok(f"{len(data)} octets")
            self.write(stuff(data))

    def do_TOP(self, arg: str) -> None:
        num, _, lines = arg.partition(" ")
        if not lines.strip().isdigit():
            self.err("TOP needs a message number and a line count")
            return
        entry = self._msg(num)
        data = self._read(entry) if entry is not None else None
        if data is None:
            return
        head, sep, body = data.partition(b"\r\n\r\n")
        count = int(lines)
        body_lines = body.split(b"\r\n")[:count] if count else []
        out = head + sep + b"\r\n".join(body_lines)
        self.ok("Top of message follows")
        self.write(stuff(out))

    def do_DELE(self, arg: str) -> None:
        entry = self._msg(arg)
        if entry is not None:
            entry.deleted = True
            self.ok(f"Message {arg} deleted")

    def do_RSET(self, arg: str) -> None:
        for m in self.messages:
            m.deleted = False
        self.ok(f"Maildrop has {len(self.messages)} messages")

    def do_NOOP(self, arg: str) -> None:
        self.ok()

    AUTHORIZATION = {
        "CAPA": do_CAPA,
        "STLS": do_STLS,
        "USER": do_USER,
        "PASS": do_PASS,
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
