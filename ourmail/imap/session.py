"""IMAP commands of any state and before login: CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN,
AUTHENTICATE (RFC 3501 §6.1, §6.2; ID, RFC 2971; SASL-IR, RFC 4959); and ENABLE (RFC 5161)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from ourmail.auth.login import LoginFailed, LoginUnavailable
from ourmail.auth.sasl import decode_plain
from ourmail.imap.states import ANY, AUTH, LOGOUT, PRE
from ourmail.imap.wire import (
    Atom,
    ParseError,
    Token,
    astring,
)
from ourmail.logs import events

#: RFC 2971 §3.3: at most 30 field-value pairs, fields up to 30 and values up to 1024 octets.
MAX_ID_FIELDS = 30


class SessionCommands:
    """Connection and login commands (a mixin of :class:`~ourmail.imap.server.IMAPServer`)."""

    # -- any state -------------------------------------------------------------------------

    def do_CAPABILITY(self, args: list[Token]) -> None:
        self.send(f"* CAPABILITY {self.capabilities()}")
        self.tagged("OK", "CAPABILITY completed")

    def do_ID(self, args: list[Token]) -> None:
        """RFC 2971: note what the client says it is, and say what we are."""
        if len(args) != 1:
            raise ParseError("ID takes NIL or a list of field-value pairs")
        fields = args[0]
        if isinstance(fields, list):
            if len(fields) % 2 or len(fields) > 2 * MAX_ID_FIELDS:
                raise ParseError("ID takes at most 30 field-value pairs")
            pairs = {
                astring(k)[:30].decode("utf-8", "replace"): _id_value(v)
                for k, v in zip(fields[::2], fields[1::2], strict=True)
            }
            self.log.info("imap client {peer} is {id}", peer=self.peer, id=pairs)
        elif not (isinstance(fields, Atom) and fields.upper() == "NIL"):
            raise ParseError("ID takes NIL or a list of field-value pairs")
        self.send('* ID ("name" "ourmail" "vendor" "ourmail")')
        self.tagged("OK", "ID completed")

    def do_ENABLE(self, args: list[Token]) -> None:
        """RFC 5161: turn on the extensions named that change behaviour here; the ENABLED
        response lists those this command turned on.

        CONDSTORE (RFC 7162 §3.1), QRESYNC (§3.2.3, implies CONDSTORE), UTF8=ACCEPT (RFC 6855
        §3), and IMAP4rev2 (RFC 9051 §6.3.1): UTF-8 mailbox names, ESEARCH answers to SEARCH,
        no RECENT, a LIST response and [CLOSED] at SELECT."""
        if not args or not all(isinstance(a, Atom) for a in args):
            raise ParseError("ENABLE takes capability names")
        names = {a.upper() for a in args if isinstance(a, Atom)}
        enabled = []
        if "IMAP4REV2" in names and not self.rev2:
            self.rev2 = self.utf8 = True
            enabled.append("IMAP4rev2")
        if "QRESYNC" in names and not self.qresync:
            self.qresync = True
            self.enable_condstore()
            enabled.append("QRESYNC")
        if "CONDSTORE" in names and self.enable_condstore():
            enabled.append("CONDSTORE")
        if "UTF8=ACCEPT" in names and not self.utf8:
            self.utf8 = True
            enabled.append("UTF8=ACCEPT")
        self.send(" ".join(["* ENABLED", *enabled]))
        self.tagged("OK", "ENABLE completed")

    def do_NOOP(self, args: list[Token]) -> None:
        self.tagged("OK", f"{self._cmd} completed")

    def do_LOGOUT(self, args: list[Token]) -> None:
        self.send("* BYE Logging out")
        self.send(f"{self._tag} OK LOGOUT completed")
        self.state = LOGOUT
        self.close()

    # -- not authenticated -----------------------------------------------------------------

    def do_STARTTLS(self, args: list[Token]) -> None:
        if self.secure:
            self.bad("TLS is already active")
            return
        self.send(f"{self._tag} OK Begin TLS negotiation now")
        self.start_tls()

    def do_LOGIN(self, args: list[Token]) -> Deferred[None] | None:
        if not self.secure:
            events.login("imap", self.peer, "", "LOGIN", events.NO_TLS)
            self.send(f"{self._tag} NO [PRIVACYREQUIRED] LOGIN is disabled until STARTTLS")
            return None
        if len(args) != 2:
            raise ParseError("LOGIN takes a user name and a password")
        user = astring(args[0]).decode("utf-8", "replace")
        password = astring(args[1]).decode("utf-8", "replace")
        return self._login(user, password, "LOGIN")

    def do_AUTHENTICATE(self, args: list[Token]) -> Deferred[None] | None:
        if not args or not isinstance(args[0], Atom) or len(args) > 2:
            raise ParseError("AUTHENTICATE takes a mechanism")
        if args[0].upper() != "PLAIN":
            self.send(f"{self._tag} NO Unsupported authentication mechanism")
            return None
        if not self.secure:
            events.login("imap", self.peer, "", "PLAIN", events.NO_TLS)
            self.send(f"{self._tag} NO [PRIVACYREQUIRED] Authentication is disabled until STARTTLS")
            return None
        if len(args) == 2:  # RFC 4959 initial response
            return self._auth_plain(astring(args[1]))
        self.send("+ ")
        self._continuation = lambda line: self._run(self._auth_plain(line))
        return None

    def _auth_plain(self, response: bytes) -> Deferred[None] | None:
        if response.strip() == b"*":
            self.send(f"{self._tag} BAD Authentication cancelled")
            return None
        plain = decode_plain(response)
        if plain is None:
            self.bad("Cannot decode the PLAIN response")
            return None
        if plain.for_someone_else:
            self.send(f"{self._tag} NO [AUTHORIZATIONFAILED] Cannot act as another user")
            return None
        return self._login(plain.authcid, plain.password, "PLAIN")

    @inlineCallbacks
    def _login(self, user: str, password: str, mechanism: str) -> Deferred[None]:
        try:
            session = yield self.ctx.authenticator.login(
                user, password, self.peer, "imap", mechanism
            )
        except LoginFailed:
            self.send(f"{self._tag} NO [AUTHENTICATIONFAILED] Authentication failed")
            self.count_error()
            return
        except LoginUnavailable:
            # RFC 5530: a temporary failure, so the client keeps the password and retries.
            self.send(f"{self._tag} NO [UNAVAILABLE] Login temporarily unavailable, try later")
            return
        self.at_close(session.end)
        session.when_revoked(self._revoked)
        self.user = session.avatar
        self.state = AUTH
        self.tagged("OK", f"[CAPABILITY {self.capabilities()}] Logged in")

    def _revoked(self) -> None:
        """The account was disabled or deleted, or its password changed: RFC 3501 §7.1.5,
        an untagged BYE, then the connection is closed (in IDLE or between commands alike;
        during a command, see :meth:`~ourmail.imap.server.IMAPServer.say_bye`)."""
        self.say_bye("Session ended by the server: please log in again")

    COMMANDS: dict[str, tuple[Callable[..., Any], frozenset[str]]] = {
        "CAPABILITY": (do_CAPABILITY, ANY),
        "NOOP": (do_NOOP, ANY),
        "LOGOUT": (do_LOGOUT, ANY),
        "ID": (do_ID, ANY),
        "ENABLE": (do_ENABLE, frozenset({AUTH})),  # RFC 5161 §3.1: before any SELECT
        "STARTTLS": (do_STARTTLS, PRE),
        "LOGIN": (do_LOGIN, PRE),
        "AUTHENTICATE": (do_AUTHENTICATE, PRE),
    }


def _id_value(tok: Token) -> str | None:
    if isinstance(tok, Atom) and tok.upper() == "NIL":
        return None
    return astring(tok)[:1024].decode("utf-8", "replace")
