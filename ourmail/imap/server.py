"""The IMAP4rev1 server (RFC 3501).

Implementation notes (keep these true when changing this module):

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
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import re
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime
from twisted.python.failure import Failure

from ourmail.auth.login import Authenticator, LoginFailed
from ourmail.config import Limits
from ourmail.imap import fetch as fetchmod
from ourmail.imap.search import Candidate, parse_search
from ourmail.imap.selected import SelectedMailbox
from ourmail.imap.sequence import parse_set, resolve_seq, resolve_uid
from ourmail.imap.wire import (
    LITERAL_MARK,
    MONTHS,
    Atom,
    ParseError,
    Token,
    astring,
    flag_list,
    mailbox_name,
    mailbox_out,
    tokenize,
    valid_tag,
)
from ourmail.interfaces import (
    BadFolderName,
    FolderExists,
    IUserStore,
    NoSuchFolder,
    ShardMoving,
    StoreError,
)
from ourmail.net.lineproto import LineProtocol
from ourmail.store.maildir import SYSTEM_FLAGS, canonical_flag, to_crlf
from ourmail.store.quota import QuotaPolicy

_LITERAL_RE = re.compile(rb"\{(\d{1,20})(\+?)\}$")
#: Largest literal accepted outside APPEND (a password, a search string, a mailbox name).
SMALL_LITERAL = 64 * 1024
MAX_LITERALS = 100
IDLE_POLL = 1.0  # seconds between checks for changes made by other processes during IDLE
_DATE_TIME_RE = re.compile(
    r"^([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$"
)

NOT_AUTH, AUTH, SELECTED, LOGOUT = "not authenticated", "authenticated", "selected", "logout"
ANY = frozenset({NOT_AUTH, AUTH, SELECTED})
AUTHED = frozenset({AUTH, SELECTED})
PRE = frozenset({NOT_AUTH})
SEL = frozenset({SELECTED})


@attrs.frozen
class IMAPContext:
    """What every IMAP connection of one listener shares."""

    hostname: str
    limits: Limits
    authenticator: Authenticator
    tls_context: IOpenSSLServerConnectionCreator
    clock: IReactorTime
    quota: QuotaPolicy
    implicit_tls: bool = False


class IMAPServer(LineProtocol):
    """One IMAP session."""

    def __init__(self, ctx: IMAPContext) -> None:
        super().__init__(ctx.limits, ctx.tls_context, ctx.implicit_tls)
        self.ctx = ctx
        self.idle_timeout = max(ctx.limits.idle_timeout, 1800)  # RFC 3501 §5.4: >= 30 minutes
        self.state = NOT_AUTH
        self.user: IUserStore | None = None
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

    # -- output ----------------------------------------------------------------------------

    def send(self, line: bytes | str) -> None:
        self.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n")

    def capabilities(self) -> str:
        caps = ["IMAP4rev1"]
        if self.state == NOT_AUTH:
            if not self.secure:
                caps += ["STARTTLS", "LOGINDISABLED"]  # RFC 3501 §6.2.1, §6.2.3
            else:
                caps += ["AUTH=PLAIN", "SASL-IR"]  # RFC 4959
        caps += ["IDLE"]  # RFC 2177
        return " ".join(caps)

    def tagged(self, status: str, text: str) -> None:
        """The tagged reply, after the untagged updates the command may carry."""
        if self.selected is not None and status == "OK":
            expunge_ok = self._cmd not in ("FETCH", "STORE", "SEARCH")
            for line in self.selected.updates(expunge_ok):
                self.send(line)
        self.send(f"{self._tag} {status} {text}")

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
        super().connectionLost(reason)
        self._stop_idle()
        self.selected = None

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
        self._text += line[: m.start()] + LITERAL_MARK
        head = self._text.split(b" ", 3)
        is_append = len(head) > 1 and head[1].upper() == b"APPEND"
        limit = self.ctx.limits.max_message_size if is_append else SMALL_LITERAL
        if (
            size > limit
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

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, text: bytes, lits: list[bytes]) -> None:
        self._tag, self._cmd = "*", ""
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
        try:
            result = handler(self, args)
        except Exception:
            self._command_failed(Failure())
            return
        self._run(result)

    def _run(self, result: Deferred[None] | None) -> None:
        """Hold further input until a handler's Deferred is done."""
        if isinstance(result, Deferred):
            self.pause()
            result.addErrback(self._command_failed)
            result.addBoth(lambda _: self.resume())

    def _command_failed(self, failure: Failure) -> None:
        if failure.check(ParseError):
            self.bad(str(failure.value))
        elif failure.check(NoSuchFolder):
            self.send(f"{self._tag} NO [NONEXISTENT] No such mailbox")
        elif failure.check(FolderExists):
            self.send(f"{self._tag} NO [ALREADYEXISTS] Mailbox already exists")
        elif failure.check(ShardMoving):
            self.send(f"{self._tag} NO [UNAVAILABLE] {failure.value}")  # RFC 5530
        elif failure.check(StoreError):
            self.send(f"{self._tag} NO [CANNOT] {failure.value}")
        else:
            self.fail(failure)

    # -- any state -------------------------------------------------------------------------

    def do_CAPABILITY(self, args: list[Token]) -> None:
        self.send(f"* CAPABILITY {self.capabilities()}")
        self.tagged("OK", "CAPABILITY completed")

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
            self.send(f"{self._tag} NO [PRIVACYREQUIRED] LOGIN is disabled until STARTTLS")
            return None
        if len(args) != 2:
            raise ParseError("LOGIN takes a user name and a password")
        user = astring(args[0]).decode("utf-8", "replace")
        password = astring(args[1]).decode("utf-8", "replace")
        return self._login(user, password)

    def do_AUTHENTICATE(self, args: list[Token]) -> Deferred[None] | None:
        if not args or not isinstance(args[0], Atom) or len(args) > 2:
            raise ParseError("AUTHENTICATE takes a mechanism")
        if args[0].upper() != "PLAIN":
            self.send(f"{self._tag} NO Unsupported authentication mechanism")
            return None
        if not self.secure:
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
        try:
            decoded = base64.b64decode(response.strip() or b"", validate=True).decode("utf-8")
            authzid, authcid, password = decoded.split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self.bad("Cannot decode the PLAIN response")
            return None
        if authzid and authzid != authcid:
            self.send(f"{self._tag} NO [AUTHORIZATIONFAILED] Cannot act as another user")
            return None
        return self._login(authcid, password)

    @inlineCallbacks
    def _login(self, user: str, password: str) -> Deferred[None]:
        try:
            avatar = yield self.ctx.authenticator.login(user, password, self.peer, "imap")
        except LoginFailed:
            self.send(f"{self._tag} NO [AUTHENTICATIONFAILED] Authentication failed")
            self.count_error()
            return
        self.user = avatar
        self.state = AUTH
        self.tagged("OK", f"[CAPABILITY {self.capabilities()}] Logged in")

    # -- authenticated ---------------------------------------------------------------------

    def _user(self) -> IUserStore:
        assert self.user is not None
        return self.user

    def _deselect(self) -> None:
        if self.selected is not None:
            self.selected = None
        self.state = AUTH

    def do_SELECT(self, args: list[Token]) -> None:
        if len(args) != 1:
            raise ParseError(f"{self._cmd} takes one mailbox")
        readonly = self._cmd == "EXAMINE"
        self._deselect()
        folder = self._user().folder(mailbox_name(args[0]))
        folder.sync()
        recent = set() if readonly else set(folder.claim_recent())
        sel = SelectedMailbox(folder, readonly, recent)
        flags = " ".join(sorted(SYSTEM_FLAGS) + folder.keywords())
        self.send(f"* FLAGS ({flags})")
        permanent = "" if readonly else f"{flags} \\*"
        self.send(f"* OK [PERMANENTFLAGS ({permanent})] Flags permitted")
        self.send(f"* {len(sel.view)} EXISTS")
        self.send(f"* {len(recent)} RECENT")
        first_unseen = folder.first_unseen()
        if first_unseen is not None:
            self.send(f"* OK [UNSEEN {sel.seq_of(first_unseen)}] First unseen message")
        self.send(f"* OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid")
        self.send(f"* OK [UIDNEXT {folder.uidnext}] Predicted next UID")
        self.selected = sel
        self.state = SELECTED
        self.tagged("OK", f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {self._cmd} completed")

    def do_CREATE(self, args: list[Token]) -> None:
        if len(args) != 1:
            raise ParseError("CREATE takes one mailbox")
        try:
            self._user().create_folder(mailbox_name(args[0]))
        except BadFolderName as e:
            self.send(f"{self._tag} NO [CANNOT] {e}")
            return
        self.tagged("OK", "CREATE completed")

    def do_DELETE(self, args: list[Token]) -> None:
        if len(args) != 1:
            raise ParseError("DELETE takes one mailbox")
        name = mailbox_name(args[0])
        if self.selected is not None and self.selected.folder.name == name:
            self._deselect()
        self._user().delete_folder(name)
        self.tagged("OK", "DELETE completed")

    def do_RENAME(self, args: list[Token]) -> None:
        if len(args) != 2:
            raise ParseError("RENAME takes two mailboxes")
        try:
            self._user().rename_folder(mailbox_name(args[0]), mailbox_name(args[1]))
        except BadFolderName as e:
            self.send(f"{self._tag} NO [CANNOT] {e}")
            return
        self.tagged("OK", "RENAME completed")

    def do_SUBSCRIBE(self, args: list[Token]) -> None:
        if len(args) != 1:
            raise ParseError(f"{self._cmd} takes one mailbox")
        name = mailbox_name(args[0])
        if self._cmd == "SUBSCRIBE":
            self._user().subscribe(name)
        else:
            self._user().unsubscribe(name)
        self.tagged("OK", f"{self._cmd} completed")

    def do_LIST(self, args: list[Token]) -> None:
        if len(args) != 2:
            raise ParseError(f"{self._cmd} takes a reference and a pattern")
        ref = mailbox_name(args[0]) if astring(args[0]) else ""
        pattern = astring(args[1])
        if not pattern and self._cmd == "LIST":
            self.send('* LIST (\\Noselect) "/" ""')  # RFC 3501 §6.3.8: the delimiter
            self.tagged("OK", "LIST completed")
            return
        regex = _list_regex(ref + mailbox_name(pattern) if pattern else ref)
        user = self._user()
        names = user.list_folders()
        candidates = names if self._cmd == "LIST" else user.subscriptions()
        existing = set(names)
        for name in candidates:
            if not (regex.match(name) or (name == "INBOX" and regex.match("inbox"))):
                continue
            attrs_ = []
            if self._cmd == "LIST":
                has_children = any(n.startswith(name + "/") for n in names)
                attrs_.append("\\HasChildren" if has_children else "\\HasNoChildren")
            elif name not in existing:
                attrs_.append("\\Noselect")
            self.send(
                b"* "
                + self._cmd.encode()
                + b" ("
                + " ".join(attrs_).encode()
                + b') "/" '
                + mailbox_out(name)
            )
        self.tagged("OK", f"{self._cmd} completed")

    def do_STATUS(self, args: list[Token]) -> None:
        if len(args) != 2 or not isinstance(args[1], list):
            raise ParseError("STATUS takes a mailbox and a list of items")
        name = mailbox_name(args[0])
        folder = self._user().folder(name)
        folder.sync()
        values = []
        for item in args[1]:
            key = item.upper() if isinstance(item, Atom) else ""
            if key == "MESSAGES":
                value = len(folder.uids())
            elif key == "RECENT":
                value = folder.recent_count()
            elif key == "UIDNEXT":
                value = folder.uidnext
            elif key == "UIDVALIDITY":
                value = folder.uidvalidity
            elif key == "UNSEEN":
                value = folder.unseen_count()
            else:
                raise ParseError(f"unknown STATUS item {key or item!r}")
            values.append(f"{key} {value}")
        self.send(b"* STATUS " + mailbox_out(name) + f" ({' '.join(values)})".encode())
        self.tagged("OK", "STATUS completed")

    def do_APPEND(self, args: list[Token]) -> Deferred[None] | None:
        if len(args) < 2 or not isinstance(args[-1], bytes):
            raise ParseError("APPEND takes a mailbox, optional flags and date, and a literal")
        name = mailbox_name(args[0])
        flags: list[str] = []
        date: float | None = None
        for extra in args[1:-1]:
            if isinstance(extra, list):
                flags = _flags(extra)
            elif isinstance(extra, bytes):
                date = parse_date_time(extra.decode("ascii", "replace"))
            else:
                raise ParseError("bad APPEND argument")
        try:
            folder = self._user().folder(name)
        except NoSuchFolder:
            self.send(f"{self._tag} NO [TRYCREATE] No such mailbox")
            return None
        if not self.ctx.quota.fits(self._user(), len(args[-1])):
            self.send(f"{self._tag} NO [OVERQUOTA] Quota exceeded")  # RFC 9208 §4.3
            return None
        return self._append(folder, args[-1], flags, date)

    @inlineCallbacks
    def _append(
        self, folder: Any, data: bytes, flags: list[str], date: float | None
    ) -> Deferred[None]:
        yield folder.append(to_crlf(data), flags, date)
        self.tagged("OK", "APPEND completed")

    def do_IDLE(self, args: list[Token]) -> None:
        """RFC 2177: report changes as they happen until the client sends DONE."""
        if args:
            raise ParseError("IDLE takes no arguments")
        self.send("+ idling")
        tag = self._tag
        if self.selected is not None:
            folder = self.selected.folder
            folder.add_listener(self._idle_wake)
            self._idle_poll = task.LoopingCall(self._idle_push)
            self._idle_poll.clock = self.ctx.clock
            self._idle_poll.start(IDLE_POLL, now=False)

        def done(line: bytes) -> None:
            self._stop_idle()
            self._tag, self._cmd = tag, "IDLE"
            if line.strip().upper() == b"DONE":
                self.tagged("OK", "IDLE terminated")
            else:
                self.bad("Expected DONE")

        self._continuation = done

    def _idle_wake(self) -> None:
        """A folder listener: push the news soon, after the change in progress has finished."""
        if not self._idle_scheduled:
            self._idle_scheduled = True
            self.ctx.clock.callLater(0, self._idle_push)

    def _idle_push(self) -> None:
        self._idle_scheduled = False
        if self.selected is not None and not self.closing:
            for line in self.selected.updates(expunge_ok=True):
                self.send(line)

    def _stop_idle(self) -> None:
        if self._idle_poll is not None:
            if self._idle_poll.running:
                self._idle_poll.stop()
            self._idle_poll = None
            if self.selected is not None:
                self.selected.folder.remove_listener(self._idle_wake)

    # -- selected --------------------------------------------------------------------------

    def _sel(self) -> SelectedMailbox:
        assert self.selected is not None
        return self.selected

    def _positions(self, tok: Token, by_uid: bool) -> list[int]:
        if not isinstance(tok, Atom):
            raise ParseError("expected a sequence set")
        ranges = parse_set(str(tok))
        view = self._sel().view
        if by_uid:
            return resolve_uid(ranges, view)
        positions = [s - 1 for s in resolve_seq(ranges, len(view))]
        if any((lo and lo > len(view)) or (hi and hi > len(view)) for lo, hi in ranges):
            raise ParseError("no such message sequence number")
        return positions

    def do_CLOSE(self, args: list[Token]) -> None:
        sel = self._sel()
        if not sel.readonly:
            sel.folder.expunge(self._deleted_uids(sel))
        self._deselect()
        self.tagged("OK", "CLOSE completed")

    def _deleted_uids(self, sel: SelectedMailbox) -> list[int]:
        sel.folder.sync()
        present = set(sel.folder.uids())
        return [u for u in sel.view if u in present and "\\Deleted" in sel.folder.message(u).flags]

    def do_EXPUNGE(self, args: list[Token]) -> None:
        sel = self._sel()
        if sel.readonly:
            self.send(f"{self._tag} NO [READ-ONLY] Mailbox is read-only")
            return
        removed = sel.folder.expunge(self._deleted_uids(sel))
        for line in sel.forget(removed):
            self.send(line)
        self.tagged("OK", "EXPUNGE completed")

    def do_SEARCH(self, args: list[Token]) -> None:
        by_uid = self._cmd.startswith("UID")
        if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "CHARSET":
            charset = astring(args[1]).decode("ascii", "replace").upper()
            if charset not in ("UTF-8", "US-ASCII"):
                self.send(f"{self._tag} NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
                return
            args = args[2:]
        sel = self._sel()
        predicate = parse_search(args, len(sel.view), sel.view)
        hits = []
        for seq, uid in enumerate(sel.view, 1):
            try:
                msg = sel.folder.message(uid)
            except KeyError:
                continue
            cand = Candidate(seq, uid in sel.recent, msg)
            try:
                if predicate(cand):
                    hits.append(uid if by_uid else seq)
            except KeyError:
                continue
        self.send("* SEARCH" + "".join(f" {n}" for n in hits))
        self.tagged("OK", f"{self._cmd} completed")

    def do_FETCH(self, args: list[Token]) -> None:
        by_uid = self._cmd.startswith("UID")
        if len(args) != 2:
            raise ParseError("FETCH takes a sequence set and items")
        sel = self._sel()
        positions = self._positions(args[0], by_uid)
        atts = fetchmod.parse_atts(args[1])
        if by_uid and not any(a.kind == "UID" for a in atts):
            atts.insert(0, fetchmod.FetchAtt(kind="UID", label=b"UID"))
        newly_seen: set[int] = set()
        if any(not a.peek for a in atts) and not sel.readonly:
            # RFC 3501 §6.4.5: BODY[...] sets \Seen; one change for the whole set, reported
            # in this FETCH's own responses.
            unseen = []
            for uid in (sel.view[p] for p in positions):
                with contextlib.suppress(KeyError):
                    if "\\Seen" not in sel.folder.message(uid).flags:
                        unseen.append(uid)
            newly_seen = set(sel.folder.store_flags(unseen, ["\\Seen"], "+"))
            if newly_seen and not any(a.kind == "FLAGS" for a in atts):
                atts = [*atts, fetchmod.FetchAtt(kind="FLAGS", label=b"FLAGS")]
        for pos in positions:
            uid = sel.view[pos]
            try:
                msg = sel.folder.message(uid)
                flags = msg.flags
                if uid in newly_seen:
                    sel.reported(uid, msg.modseq)
                rendered = fetchmod.Rendered(msg)
                items = [fetchmod.render(a, rendered, sel.flags_of(uid, flags)) for a in atts]
            except KeyError:
                continue  # expunged by someone else; the EXPUNGE comes later
            self.write(b"* %d FETCH (" % (pos + 1) + b" ".join(items) + b")\r\n")
        self.tagged("OK", f"{self._cmd} completed")

    def do_STORE(self, args: list[Token]) -> None:
        by_uid = self._cmd.startswith("UID")
        if len(args) < 3 or not isinstance(args[1], Atom):
            raise ParseError("STORE takes a sequence set, an item and flags")
        sel = self._sel()
        if sel.readonly:
            self.send(f"{self._tag} NO [READ-ONLY] Mailbox is read-only")
            return
        item = args[1].upper()
        silent = item.endswith(".SILENT")
        item = item.removesuffix(".SILENT")
        mode = {"FLAGS": "=", "+FLAGS": "+", "-FLAGS": "-"}.get(item)
        if mode is None:
            raise ParseError("STORE item must be FLAGS, +FLAGS or -FLAGS")
        flags = _flags(args[2] if len(args) == 3 and isinstance(args[2], list) else args[2:])
        positions = self._positions(args[0], by_uid)
        uids = [sel.view[p] for p in positions]
        result = sel.folder.store_flags(uids, flags, mode)  # type: ignore[arg-type]
        for pos in positions:
            uid = sel.view[pos]
            if uid not in result:
                continue
            sel.reported(uid, sel.folder.message(uid).modseq)
            if not silent:
                extra = b" UID %d" % uid if by_uid else b""
                self.send(
                    b"* %d FETCH (FLAGS %s%s)"
                    % (pos + 1, flag_list(sel.flags_of(uid, result[uid])), extra)
                )
        self.tagged("OK", f"{self._cmd} completed")

    def do_COPY(self, args: list[Token]) -> Deferred[None] | None:
        by_uid = self._cmd.startswith("UID")
        if len(args) != 2:
            raise ParseError("COPY takes a sequence set and a mailbox")
        sel = self._sel()
        positions = self._positions(args[0], by_uid)
        try:
            target = self._user().folder(mailbox_name(args[1]))
        except NoSuchFolder:
            self.send(f"{self._tag} NO [TRYCREATE] No such mailbox")
            return None
        uids, size = [], 0
        for uid in (sel.view[p] for p in positions):
            with contextlib.suppress(KeyError):  # expunged meanwhile
                size += sel.folder.message(uid).size
                uids.append(uid)
        if not self.ctx.quota.fits(self._user(), size, len(uids)):
            self.send(f"{self._tag} NO [OVERQUOTA] Quota exceeded")
            return None
        return self._copy(sel, uids, target)

    @inlineCallbacks
    def _copy(self, sel: SelectedMailbox, uids: list[int], target: Any) -> Deferred[None]:
        yield sel.folder.copy_to(uids, target)
        self.tagged("OK", f"{self._cmd} completed")

    COMMANDS: dict[str, tuple[Callable[..., Any], frozenset[str]]] = {
        "CAPABILITY": (do_CAPABILITY, ANY),
        "NOOP": (do_NOOP, ANY),
        "LOGOUT": (do_LOGOUT, ANY),
        "STARTTLS": (do_STARTTLS, PRE),
        "LOGIN": (do_LOGIN, PRE),
        "AUTHENTICATE": (do_AUTHENTICATE, PRE),
        "SELECT": (do_SELECT, AUTHED),
        "EXAMINE": (do_SELECT, AUTHED),
        "CREATE": (do_CREATE, AUTHED),
        "DELETE": (do_DELETE, AUTHED),
        "RENAME": (do_RENAME, AUTHED),
        "SUBSCRIBE": (do_SUBSCRIBE, AUTHED),
        "UNSUBSCRIBE": (do_SUBSCRIBE, AUTHED),
        "LIST": (do_LIST, AUTHED),
        "LSUB": (do_LIST, AUTHED),
        "STATUS": (do_STATUS, AUTHED),
        "APPEND": (do_APPEND, AUTHED),
        "IDLE": (do_IDLE, AUTHED),
        "CHECK": (do_NOOP, SEL),
        "CLOSE": (do_CLOSE, SEL),
        "EXPUNGE": (do_EXPUNGE, SEL),
        "SEARCH": (do_SEARCH, SEL),
        "FETCH": (do_FETCH, SEL),
        "STORE": (do_STORE, SEL),
        "COPY": (do_COPY, SEL),
        "UID SEARCH": (do_SEARCH, SEL),
        "UID FETCH": (do_FETCH, SEL),
        "UID STORE": (do_STORE, SEL),
        "UID COPY": (do_COPY, SEL),
    }


def _flags(tokens: list[Token]) -> list[str]:
    out = []
    for tok in tokens:
        if not isinstance(tok, Atom) or not tok or tok.upper() == "\\RECENT":
            raise ParseError(f"bad flag {tok!r}")
        if tok.startswith("\\") and canonical_flag(tok) not in SYSTEM_FLAGS:
            raise ParseError(f"unknown system flag {tok}")
        if any(c in tok for c in '(){%*"\\]') and not tok.startswith("\\"):
            raise ParseError(f"bad keyword {tok}")
        out.append(canonical_flag(tok))
    return out


def _list_regex(pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8 wildcards: ``*`` matches anything, ``%`` anything but the delimiter."""
    parts = [".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern]
    return re.compile("^" + "".join(parts) + "$")


def parse_date_time(text: str) -> float:
    """RFC 3501 ``date-time`` (``"17-Jul-1996 02:44:25 -0700"``) as a POSIX timestamp."""
    m = _DATE_TIME_RE.match(text)
    if not m or m.group(2).upper() not in MONTHS:
        raise ParseError(f"bad date-time {text[:40]!r}")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    offset = datetime.timedelta(hours=int(zh), minutes=int(zm))
    try:
        tz = datetime.timezone(offset if sign == "+" else -offset)
        when = datetime.datetime(
            int(year), MONTHS[mon.upper()], int(day), int(hh), int(mm), int(ss), tzinfo=tz
        )
    except ValueError:
        raise ParseError(f"bad date-time {text[:40]!r}") from None
    return when.timestamp()
