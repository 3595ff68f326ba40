"""The IMAP4rev1 server (RFC 3501): the session core (connection, literals, dispatch, replies).

The commands live in one module per family, each a mixin with its own table: ``session``
(any state, login), ``mailboxes``, ``messages`` and ``idle``; the parser is ``wire`` (tokens,
literals) with ``sequence``, ``search`` and ``fetch`` for their arguments.

Implementation notes (keep these true when changing the IMAP modules):

* Commands are a table from name to (handler, states); the state check lives in
  :meth:`IMAPServer.dispatch` only.  Handlers raise :class:`ParseError` (-> ``BAD``) or
  :class:`~ourmail.interfaces.StoreError` (-> ``NO``); anything else is logged with its traceback
  and answered ``NO [SERVERBUG]``, never shown to the client.
* One command at a time: while a handler's Deferred is pending, input waits in the buffer.
* Literals are bounded before a byte is read: APPEND up to ``max_message_size`` (else
  ``NO [TOOBIG]``, RFC 7889), any other command up to ``SMALL_LITERAL``.  A synchronising literal
  that is refused is never read (the client waits for ``+``); a refused non-synchronising literal
  closes the connection, as its bytes cannot be told apart from commands.
* Always revalidate the selected mailbox: every command ends with the untagged updates of
  :class:`~ourmail.imap.selected.SelectedMailbox` (no EXPUNGE during FETCH, STORE, SEARCH).
* LOGIN and AUTHENTICATE only under TLS (``LOGINDISABLED`` before, RFC 3501 §6.2.3, RFC 8314).
* Mailbox names are modified UTF-7 on the wire; the store checks that they stay in the
  user's tree.
* Names under the shared prefix (``Lists/``) are looked up through
  :class:`~ourmail.interfaces.ISharedFolders` unless the user has a folder of that name
  (``imap/shared.py``); shared folders are read-only, one the user may not read answers as
  a missing one, and a selected one is checked again before every command.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime
from twisted.python.failure import Failure

from ourmail.auth.login import Authenticator
from ourmail.config import Limits
from ourmail.imap.compress import CompressCommand
from ourmail.imap.idle import IdleCommand
from ourmail.imap.mailboxes import MailboxCommands
from ourmail.imap.messages import MessageCommands
from ourmail.imap.selected import SelectedMailbox
from ourmail.imap.session import SessionCommands
from ourmail.imap.shared import SharedNamespace
from ourmail.imap.states import AUTH, LOGOUT, NOT_AUTH
from ourmail.imap.wire import (
    LITERAL_MARK,
    Atom,
    ParseError,
    Token,
    mailbox_name,
    mailbox_out,
    tokenize,
    valid_tag,
)
from ourmail.interfaces import (
    FolderExists,
    IQuotaPolicy,
    ISharedFolders,
    IUserStore,
    IVault,
    NoSuchFolder,
    ShardMoving,
    StoreError,
)
from ourmail.mime.content import UnknownCTE
from ourmail.net.lineproto import LineProtocol

_LITERAL_RE = re.compile(rb"\{(\d{1,20})(\+?)\}$")
#: Largest literal accepted outside APPEND (a password, a search string, a mailbox name).
SMALL_LITERAL = 64 * 1024
MAX_LITERALS = 100
#: All the literals of one command together: at most this many times the per-literal limit.
APPEND_TOTAL_FACTOR = 2


@attrs.frozen
class IMAPContext:
    """What every IMAP connection of one listener shares."""

    hostname: str
    limits: Limits
    authenticator: Authenticator
    tls_context: IOpenSSLServerConnectionCreator
    clock: IReactorTime
    quota: IQuotaPolicy
    implicit_tls: bool = False
    #: Where messages APPENDed into a ``\\Sent`` folder are kept (docs/vault.md); None: not.
    vault: IVault | None = None
    #: Folders shared with users (the lists' archives), in the shared namespace (RFC 2342).
    shared: ISharedFolders | None = None


class IMAPServer(
    SessionCommands,
    MailboxCommands,
    MessageCommands,
    IdleCommand,
    CompressCommand,
    SharedNamespace,
    LineProtocol,
):
    """One IMAP session."""

    def __init__(self, ctx: IMAPContext) -> None:
        super().__init__(ctx.limits, ctx.tls_context, ctx.implicit_tls)
        self.ctx = ctx
        self.idle_timeout = max(ctx.limits.idle_timeout, 1800)  # RFC 3501 §5.4: >= 30 minutes
        self.state = NOT_AUTH
        self.user: IUserStore | None = None
        #: CONDSTORE (RFC 7162 §3.1) is on: MODSEQ goes into every FETCH response.
        self.condstore = False
        #: UTF8=ACCEPT (RFC 6855) is on: mailbox names are UTF-8 instead of modified UTF-7.
        self.utf8 = False
        #: QRESYNC (RFC 7162 §3.2) is on: VANISHED instead of EXPUNGE, SELECT (QRESYNC ...).
        self.qresync = False
        #: The client enabled IMAP4rev2 (RFC 9051).
        self.rev2 = False
        self.selected: SelectedMailbox | None = None
        self._continuation: Callable[[bytes], None] | None = None
        self._text = b""
        self._lits: list[bytes] = []
        self._lit_need = 0
        self._lit_buf: bytearray | None = None
        self._tag = "*"
        self._cmd = ""
        self._idle_poll: task.LoopingCall | None = None
        self._idle_scheduled = False
        #: The selected folder was synced in this reactor turn (the command's catch-up), so
        #: a tagged reply made in the same turn need not stat its files again.
        self._synced = False
        #: A command's Deferred is pending (its reply not all written yet).
        self._busy = False
        #: FETCH responses are being streamed: a literal may be half written.
        self._streaming = False
        #: The session was revoked during a command: BYE once its reply is out.
        self._bye_after: str | None = None

    # -- output ----------------------------------------------------------------------------

    def send(self, line: bytes | str) -> None:
        self.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n")

    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "IMAP4rev2"]
        if self.state == NOT_AUTH:
            if not self.secure:
                caps += ["STARTTLS", "LOGINDISABLED"]  # RFC 3501 §6.2.1, §6.2.3
            else:
                caps += ["AUTH=PLAIN", "SASL-IR"]  # RFC 4959
        caps += [
            "IDLE",  # RFC 2177
            "ID",  # RFC 2971
            "ENABLE",  # RFC 5161
            "NAMESPACE",  # RFC 2342
            "UNSELECT",  # RFC 3691
            "UIDPLUS",  # RFC 4315
            "MOVE",  # RFC 6851
            "CHILDREN",  # RFC 3348
            "SPECIAL-USE",  # RFC 6154
            "CREATE-SPECIAL-USE",
            "LITERAL+",  # RFC 7888 (a superset of IMAP4rev2's LITERAL-)
            "CONDSTORE",  # RFC 7162
            "QRESYNC",
            "ESEARCH",  # RFC 4731
            "SEARCHRES",  # RFC 5182
            "LIST-EXTENDED",  # RFC 5258
            "LIST-STATUS",  # RFC 5819
            "QUOTA",  # RFC 9208
            "QUOTA=RES-STORAGE",
            "QUOTA=RES-MESSAGE",
            "MULTIAPPEND",  # RFC 3502
            "UTF8=ACCEPT",  # RFC 6855
            "COMPRESS=DEFLATE",  # RFC 4978
            "SORT",  # RFC 5256
            "BINARY",  # RFC 3516
            "STATUS=SIZE",  # RFC 8438
            f"APPENDLIMIT={self.ctx.limits.max_message_size}",  # RFC 7889
        ]
        return " ".join(caps)

    def tagged(self, status: str, text: str, before: bytes = b"") -> None:
        """The tagged reply, after the untagged updates the command may carry; ``before`` is
        the command's own untagged output, sent in the same write."""
        out = [before]
        if self.selected is not None and status == "OK":
            # RFC 3501 §7.4.1 (and RFC 5256 §4 for SORT): no EXPUNGE while numbers are in use.
            expunge_ok = self._cmd not in ("FETCH", "STORE", "SEARCH", "SORT")
            updates = self.selected.updates(expunge_ok, sync=not self._synced)
            out += [line + b"\r\n" for line in updates]
        out.append(f"{self._tag} {status} {text}\r\n".encode())
        self.write(b"".join(out))

    def bad(self, text: str) -> None:
        self.send(f"{self._tag} BAD {text}")
        self.count_error()

    # -- connection ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.refuse():
            return
        self.log.info("imap connection from {peer}", peer=self.peer)
        self.send(f"* OK [CAPABILITY {self.capabilities()}] {self.ctx.hostname} ourmail ready")

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._stop_idle()
        self.selected = None
        super().connectionLost(reason)  # last: it ends the login (the realm's logout)

    def send_goodbye_timeout(self) -> None:
        self.send("* BYE Autologout; idle for too long")

    def send_refusal(self, why: str) -> None:
        self.send(f"* BYE [UNAVAILABLE] {why}, try again later")  # RFC 5530

    def line_too_long(self) -> None:
        self._text, self._lits = b"", []
        self.send("* BAD Command line too long")
        self.count_error()

    def internal_error(self) -> None:
        self._text, self._lits, self._continuation = b"", [], None
        self.send(f"{self._tag} NO [SERVERBUG] Internal error; it has been logged")

    def too_many_errors(self) -> None:
        self.send("* BYE Too many errors")

    def say_goodbye_before_login(self) -> None:
        self.send("* BYE Too many commands before login")

    # -- command assembly (literals, RFC 3501 §4.3, RFC 7888) -------------------------------

    def line_received(self, line: bytes) -> None:
        if self._continuation is not None:
            cont, self._continuation = self._continuation, None
            cont(line)
            return
        if b"\x00" in line:
            self._text, self._lits = b"", []
            self.send("* BAD NUL in command")
            self.count_error()
            return
        m = _LITERAL_RE.search(line)
        if m is None:
            text, lits = self._text + line, self._lits
            self._text, self._lits = b"", []
            self.dispatch(text, lits)
            return
        size, sync = int(m.group(1)), not m.group(2)
        # A literal8 (``~{n}``, RFC 3516 §4.1, used by APPEND UTF8 of RFC 6855 §4) is read as a
        # literal; our literals may carry any octet.
        start = m.start() - 1 if line[: m.start()].endswith(b"~") else m.start()
        self._text += line[:start] + LITERAL_MARK
        head = self._text.split(b" ", 3)
        is_append = len(head) > 1 and head[1].upper() == b"APPEND"
        limit = self.ctx.limits.max_message_size if is_append else SMALL_LITERAL
        # MULTIAPPEND (RFC 3502) holds all its messages until the last: bound the total too.
        held = sum(len(x) for x in self._lits)
        if (
            size > limit
            or held + size > APPEND_TOTAL_FACTOR * limit
            or len(self._lits) >= MAX_LITERALS
            or len(self._text) > self.max_line_length
        ):
            tag = head[0].decode("utf-8", "replace")
            self._text, self._lits = b"", []
            if not sync:
                self.send("* BYE Literal too large")
                self.close()
                return
            if valid_tag(tag):
                self.send(f"{tag} NO [TOOBIG] Literal too large (limit {limit} bytes)")
            else:
                self.send("* BAD Literal too large")
            self.count_error()
            return
        if sync:
            self.send("+ Ready for literal data")
        self._lit_need = size
        self._lit_buf = bytearray()
        if size == 0:
            self._lits.append(b"")
        else:
            self.set_raw_mode()

    def raw_data_received(self, data: bytes) -> None:
        assert self._lit_buf is not None
        need = self._lit_need - len(self._lit_buf)
        self._lit_buf += data[:need]
        if len(self._lit_buf) == self._lit_need:
            self._lits.append(bytes(self._lit_buf))
            self._lit_buf = None
            self.set_line_mode(data[need:])
            if not data[need:]:
                # The command's last bytes (often just CRLF) may wait in the client's Nagle
                # buffer for our ACK, which Linux delays up to 40 ms.
                self.quick_ack()

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, text: bytes, lits: list[bytes]) -> None:
        self._tag, self._cmd = "*", ""
        if self.state == NOT_AUTH and self.too_many_before_login():
            return
        first = text.split(b" ", 1)[0].decode("utf-8", "replace")
        if not valid_tag(first):
            self.send("* BAD Invalid tag")
            self.count_error()
            return
        self._tag = first
        try:
            tokens = tokenize(text, lits)
        except ParseError as e:
            self.bad(f"Parse error: {e}")
            return
        if len(tokens) < 2 or not isinstance(tokens[1], Atom):
            self.bad("Missing command")
            return
        name, args = tokens[1].upper(), tokens[2:]
        if name == "UID":
            if not args or not isinstance(args[0], Atom):
                self.bad("UID needs a command")
                return
            name, args = "UID " + args[0].upper(), args[1:]
        self._cmd = name
        entry = self.COMMANDS.get(name)
        if entry is None:
            self.bad("Unknown command")
            return
        handler, states = entry
        if self.state not in states:
            self.bad(f"{name} is not allowed in the {self.state} state")
            return
        if not self.selection_readable(name):
            self._synced = False
            return
        self._catch_up()
        try:
            result = handler(self, args)
        except Exception:
            self._command_failed(Failure())
            return
        finally:
            self._synced = False  # a reply made later syncs again: time has passed
        self._run(result)

    def _catch_up(self) -> None:
        """Read what other processes changed in the selected folder (a few stat calls when
        nothing did), so the command sees flags as they are now; sessions in this process
        share the folder's state already.  The view (sequence numbers) moves only with the
        untagged responses, as RFC 3501 §5.2 and §7.4.1 require."""
        if self.selected is not None and not self._synced:
            with contextlib.suppress(StoreError):
                self.selected.folder.sync()
                self._synced = True

    def _run(self, result: Deferred[None] | None) -> None:
        """Hold further input until a handler's Deferred is done."""
        if isinstance(result, Deferred):
            self.pause()
            self._busy = True
            result.addErrback(self._command_failed)
            result.addBoth(self._command_done)

    def _command_done(self, _: object) -> None:
        self._busy = False
        bye, self._bye_after = self._bye_after, None
        if bye is not None:
            self.say_bye(bye)
        else:
            self.resume()

    def say_bye(self, text: str) -> None:
        """Close the session with an untagged BYE (RFC 3501 §7.1.5), never inside a response:
        during a command the BYE waits for its tagged reply (an APPEND's, whose message is
        then kept and acknowledged, not taken twice by the client's retry); while FETCH
        responses stream, where a literal may be half written and nothing else may be sent
        (RFC 3501 §4.3), the connection just closes and the stream stops."""
        if self._streaming:
            self.state = LOGOUT
            self.close()
        elif self._busy:
            self._bye_after = text
        else:
            self.send(f"* BYE {text}")
            self.state = LOGOUT
            self.close()

    def _command_failed(self, failure: Failure) -> None:
        if failure.check(ParseError):
            self.bad(str(failure.value))
        elif failure.check(NoSuchFolder):
            self.send(f"{self._tag} NO [NONEXISTENT] No such mailbox")
        elif failure.check(FolderExists):
            self.send(f"{self._tag} NO [ALREADYEXISTS] Mailbox already exists")
        elif failure.check(ShardMoving):
            self.send(f"{self._tag} NO [UNAVAILABLE] {failure.value}")  # RFC 5530
        elif failure.check(UnknownCTE):
            self.send(f"{self._tag} NO [UNKNOWN-CTE] Cannot decode this part")  # RFC 3516 §4.3
        elif failure.check(StoreError):
            self.send(f"{self._tag} NO [CANNOT] {failure.value}")
        else:
            self.fail(failure)

    # -- authenticated ---------------------------------------------------------------------

    def _user(self) -> IUserStore:
        assert self.user is not None
        return self.user

    def mailbox_arg(self, tok: Token) -> str:
        """A mailbox name argument, in the encoding this session uses."""
        return mailbox_name(tok, self.utf8)

    def mailbox_bytes(self, name: str) -> bytes:
        """A mailbox name for a response, in the encoding this session uses."""
        return mailbox_out(name, self.utf8)

    def enable_condstore(self) -> bool:
        """Turn CONDSTORE on (RFC 7162 §3.1: by ENABLE or any CONDSTORE-enabling command);
        True if it was off."""
        was = self.condstore
        self.condstore = True
        if self.selected is not None:
            self.selected.condstore = True
        return not was

    def _deselect(self) -> None:
        if self.selected is not None:
            self.selected = None
        self.state = AUTH

    COMMANDS: dict[str, tuple[Callable[..., Any], frozenset[str]]] = {
        **SessionCommands.COMMANDS,
        **MailboxCommands.COMMANDS,
        **MessageCommands.COMMANDS,
        **IdleCommand.COMMANDS,
        **CompressCommand.COMMANDS,
    }
