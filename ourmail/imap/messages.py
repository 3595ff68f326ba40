"""IMAP message commands: APPEND, CHECK, CLOSE, EXPUNGE, SEARCH, FETCH, STORE, COPY and their UID
forms (RFC 3501 §6.3.11, §6.4); UNSELECT (RFC 3691); MOVE (RFC 6851); UIDPLUS (RFC 4315):
APPENDUID and COPYUID response codes and UID EXPUNGE."""

from __future__ import annotations

import bisect
import contextlib
import datetime
import email.parser
import email.policy
import email.utils
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks

from ourmail.imap import fetch as fetchmod
from ourmail.imap import sort as sortmod
from ourmail.imap.search import Candidate, parse_search
from ourmail.imap.selected import SelectedMailbox
from ourmail.imap.sequence import format_set, parse_set, resolve_seq, resolve_uid
from ourmail.imap.states import AUTHED, SEL
from ourmail.imap.wire import (
    MONTHS,
    Atom,
    ParseError,
    Token,
    astring,
    flag_list,
)
from ourmail.interfaces import (
    DEFAULT_FOLDERS,
    IUserStore,
    NoSuchFolder,
    VaultEnvelope,
)
from ourmail.mailflags import SYSTEM_FLAGS, canonical_flag
from ourmail.mime.structure import to_crlf

#: Untagged responses are gathered into writes of about this size.
OUT_CHUNK = 64 * 1024
#: A long FETCH waits for the connection to drain after about this much.
DRAIN_EVERY = 1024 * 1024

_DATE_TIME_RE = re.compile(
    r"^([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$"
)


class MessageCommands:
    """Commands on messages (a mixin of :class:`~ourmail.imap.server.IMAPServer`)."""

    def do_APPEND(self, args: list[Token]) -> Deferred[None] | None:
        """APPEND, and MULTIAPPEND (RFC 3502): several messages, all stored or none."""
        if len(args) < 2:
            raise ParseError("APPEND takes a mailbox, optional flags and date, and a literal")
        name = self.mailbox_arg(args[0])
        messages = _append_groups(args[1:])
        if self.refuse_shared(name):
            return None
        try:
            folder = self._user().folder(name)
        except NoSuchFolder:
            self.send(f"{self._tag} NO [TRYCREATE] No such mailbox")
            return None
        size = sum(len(data) for _, _, data in messages)
        if not self.ctx.quota.fits(self._user(), size, len(messages)):
            self.send(f"{self._tag} NO [OVERQUOTA] Quota exceeded")  # RFC 9208 §4.3
            return None
        return self._append(folder, messages)

    @inlineCallbacks
    def _append(
        self, folder: Any, messages: list[tuple[list[str], float | None, bytes]]
    ) -> Deferred[None]:
        # Submitted together, they commit in one batch with ascending UIDs; a copy for the
        # vault joins the same batch, first.
        contents = [to_crlf(data) for _, _, data in messages]
        kept = self._keep_sent(folder, contents)
        appends = [
            folder.append(content, flags, date)
            for (flags, date, _), content in zip(messages, contents, strict=True)
        ]
        results = yield DeferredList(appends, consumeErrors=True)
        uids = [uid for ok, uid in results if ok]
        failures = [f for ok, f in results if not ok]
        failures += [f for ok, f in (yield DeferredList(kept, consumeErrors=True)) if not ok]
        if failures:
            folder.expunge(uids)  # RFC 3502 §6.3.11: none of them, then
            failures[0].raiseException()
        self.tagged("OK", f"[APPENDUID {folder.uidvalidity} {format_set(uids)}] APPEND completed")

    def _keep_sent(self, folder: Any, contents: list[bytes]) -> list[Deferred[int]]:
        """An APPEND into the user's ``\\Sent`` folder (RFC 6154) is kept in the vault, with
        the message's To, Cc and Bcc as its recipients; other folders are not."""
        user = self._user()
        if self.ctx.vault is None or _special_use(user, folder.name) != "\\Sent":
            return []
        return [
            self.ctx.vault.capture(
                content,
                VaultEnvelope(
                    via="imap-append",
                    sender=user.address,
                    recipients=addressees(content),
                    mailboxes=(user.address,),
                    client=str(getattr(self.transport and self.transport.getPeer(), "host", "")),
                    user=user.address,
                    arrival=self.ctx.clock.seconds(),
                ),
            )
            for content in contents
        ]

    # -- selected --------------------------------------------------------------------------

    def _sel(self) -> SelectedMailbox:
        assert self.selected is not None
        return self.selected

    def _positions(self, tok: Token, by_uid: bool) -> list[int]:
        if not isinstance(tok, Atom):
            raise ParseError("expected a sequence set")
        view = self._sel().view
        if tok == "$":  # RFC 5182 §2.2: the saved search result, by UID or not
            saved = self._sel().saved
            return [p for p, uid in enumerate(view) if uid in saved]
        ranges = parse_set(str(tok))
        if by_uid:
            return resolve_uid(ranges, view)
        positions = [s - 1 for s in resolve_seq(ranges, len(view))]
        if any((lo and lo > len(view)) or (hi and hi > len(view)) for lo, hi in ranges):
            raise ParseError("no such message sequence number")
        return positions

    def do_CHECK(self, args: list[Token]) -> None:
        """RFC 3501 §6.4.1: nothing to do; every change is already durable."""
        self.tagged("OK", "CHECK completed")

    def do_CLOSE(self, args: list[Token]) -> None:
        sel = self._sel()
        if not sel.readonly:
            sel.folder.expunge(self._deleted_uids(sel))
        self._deselect()
        self.tagged("OK", "CLOSE completed")

    def _deleted_uids(self, sel: SelectedMailbox) -> list[int]:
        """The \\Deleted messages of the session's view (the folder was read from disk as the
        command began: IMAPServer._catch_up)."""
        present = set(sel.folder.uids())
        return [u for u in sel.view if u in present and "\\Deleted" in sel.folder.message(u).flags]

    def do_UNSELECT(self, args: list[Token]) -> None:
        """RFC 3691: leave the mailbox without expunging anything."""
        if args:
            raise ParseError("UNSELECT takes no arguments")
        self._deselect()
        self.tagged("OK", "UNSELECT completed")

    def do_EXPUNGE(self, args: list[Token]) -> None:
        """EXPUNGE, and UID EXPUNGE (RFC 4315 §2.1): only the \\Deleted messages in a UID set."""
        sel = self._sel()
        by_uid = self._cmd.startswith("UID")
        if len(args) != (1 if by_uid else 0):
            raise ParseError(f"{self._cmd} takes {'a UID set' if by_uid else 'no arguments'}")
        if sel.readonly:
            self.send(f"{self._tag} NO [READ-ONLY] Mailbox is read-only")
            return
        doomed = self._deleted_uids(sel)
        if by_uid:
            chosen = {sel.view[p] for p in self._positions(args[0], True)}
            doomed = [u for u in doomed if u in chosen]
        removed = sel.folder.expunge(doomed)
        for line in sel.forget(removed):
            self.send(line)
        self.tagged("OK", f"{self._cmd} completed")

    def _charset_ok(self, args: list[Token], required: bool) -> list[Token] | None:
        """Take a ``CHARSET x`` (SEARCH) or ``x`` (SORT) argument; None after a NO."""
        if not required:
            if not (len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "CHARSET"):
                return args
            args = args[1:]
        if not args:
            raise ParseError("a charset is needed")
        charset = astring(args[0]).decode("ascii", "replace").upper()
        if charset not in ("UTF-8", "US-ASCII"):
            self.send(f"{self._tag} NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
            return None
        return args[1:]

    @inlineCallbacks
    def _matching(self, args: list[Token]) -> Deferred[tuple[list[int], bool]]:
        """The UIDs a search matches, ascending (so in sequence order), and whether it used
        MODSEQ; BODY and TEXT are read off the reactor thread."""
        sel = self._sel()
        search = parse_search(args, len(sel.view), sel.view, sel.saved)
        if search.uses_modseq:
            self.enable_condstore()
        found = yield search.matching_later(sel.folder, sel.view, sel.recent)
        return found, search.uses_modseq

    @inlineCallbacks
    def do_SEARCH(self, args: list[Token]) -> Deferred[None]:
        """SEARCH, with ESEARCH's RETURN options (RFC 4731) and SEARCHRES's SAVE (RFC 5182);
        under IMAP4rev2 the answer is always an ESEARCH response (RFC 9051 §6.4.4)."""
        by_uid = self._cmd.startswith("UID")
        sel = self._sel()
        returns: list[str] | None = None
        if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "RETURN":
            returns = _search_returns(args[1])  # RFC 4731 §3.1
            args = args[2:]
        elif self.rev2:
            returns = ["ALL"]
        saving = returns is not None and "SAVE" in returns
        if saving:
            sel.saved = set()  # RFC 5182 §2.1: empty if this search fails
        rest = self._charset_ok(args, required=False)
        if rest is None:
            return
        found, uses_modseq = yield self._matching(rest)
        hits = found if by_uid else [bisect.bisect_left(sel.view, u) + 1 for u in found]
        top = max((_modseq_of_uid(sel, u) for u in found), default=0) if uses_modseq else 0
        if returns is not None and saving:
            returns = [r for r in returns if r != "SAVE"]
            sel.saved = _saved(found, returns)
        if returns:
            self.send(_esearch(self._tag, by_uid, returns, hits, top if uses_modseq else 0))
        elif returns is None:
            modseq = f" (MODSEQ {top})" if uses_modseq and hits else ""  # RFC 7162 §3.1.5
            self.send(" ".join(["* SEARCH", *map(str, hits)]) + modseq)
        self.tagged("OK", f"{self._cmd} completed")

    @inlineCallbacks
    def do_SORT(self, args: list[Token]) -> Deferred[None]:
        """RFC 5256 §3: ``SORT (criteria) charset search-keys``."""
        by_uid = self._cmd.startswith("UID")
        if not args:
            raise ParseError("SORT takes sort criteria, a charset and search keys")
        criteria = sortmod.parse_criteria(args[0])
        rest = self._charset_ok(args[1:], required=True)
        if rest is None:
            return
        uids, _ = yield self._matching(rest)
        sel = self._sel()
        found = []
        for uid in uids:
            with contextlib.suppress(KeyError):  # expunged meanwhile
                message = sel.folder.message(uid)
                found.append(Candidate(sel.seq_of(uid) or 0, uid in sel.recent, message))
        ordered = sortmod.sort(found, criteria)
        self.send("* SORT" + "".join(f" {c.uid if by_uid else c.seq}" for c in ordered))
        self.tagged("OK", f"{self._cmd} completed")

    def do_FETCH(self, args: list[Token]) -> Deferred[None] | None:
        by_uid = self._cmd.startswith("UID")
        changed_since, vanished = None, False
        if len(args) == 3:
            # RFC 7162 §3.1.4.1, §3.2.6: FETCH ... (CHANGEDSINCE modseq [VANISHED])
            changed_since, vanished = _fetch_modifiers(args[2])
            if vanished and not (by_uid and self.qresync):
                raise ParseError("VANISHED needs UID FETCH and ENABLE QRESYNC")
            args = args[:2]
        if len(args) != 2:
            raise ParseError("FETCH takes a sequence set and items")
        sel = self._sel()
        positions = self._positions(args[0], by_uid)
        atts = fetchmod.parse_atts(args[1])
        if by_uid:
            atts = fetchmod.with_item(atts, "UID", first=True)
        if changed_since is not None or any(a.kind == "MODSEQ" for a in atts):
            self.enable_condstore()
        if changed_since is not None:
            positions = [p for p in positions if _modseq_of(sel, p) > changed_since]
            atts = fetchmod.with_item(atts, "MODSEQ")
        if vanished and changed_since is not None:
            known = None if args[0] == "$" else parse_set(str(args[0]))
            gone = sel.vanished_since(changed_since, known)
            if gone:
                self.send(f"* VANISHED (EARLIER) {gone}")
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
            if newly_seen:
                atts = fetchmod.with_item(atts, "FLAGS")
            if newly_seen and self.condstore:
                atts = fetchmod.with_item(atts, "MODSEQ")
        return self._write_fetches(self._fetch_responses(sel, positions, atts, newly_seen))

    def _fetch_responses(
        self,
        sel: SelectedMailbox,
        positions: list[int],
        atts: list[fetchmod.FetchAtt],
        newly_seen: set[int],
    ) -> Iterator[fetchmod.Pieces]:
        """Each message's ``* n FETCH (...)`` response, as bytes with any content to stream."""
        for pos in positions:
            uid = sel.view[pos]
            try:
                msg = sel.folder.message(uid)
                if uid in newly_seen:
                    sel.reported(uid, msg.modseq)
                rendered = fetchmod.Rendered(msg)
                flags = sel.flags_of(uid, msg.flags)
                items = [fetchmod.render(a, rendered, flags) for a in atts]
            except KeyError:
                continue  # expunged by someone else; the EXPUNGE comes later
            if all(len(item) == 1 for item in items):  # all bytes: nothing to stream
                joined = b" ".join([item[0] for item in items])  # type: ignore[misc]
                yield [b"* %d FETCH (%s)\r\n" % (pos + 1, joined)]
                continue
            pieces: fetchmod.Pieces = [b"* %d FETCH (" % (pos + 1)]
            for n, item in enumerate(items):
                pieces += [b" "] if n else []
                pieces += item
            pieces.append(b")\r\n")
            yield _joined(pieces)

    def _write_fetches(self, responses: Iterator[fetchmod.Pieces]) -> Deferred[None] | None:
        """Write the responses, gathered into writes of ``OUT_CHUNK`` (one TLS record per
        response would cost more than the response).  Up to the first ``OUT_CHUNK`` or the
        first content to stream, at once; the rest as the connection drains, so the client
        reads while later responses are made."""
        out = bytearray()
        for pieces in responses:
            if len(pieces) > 1 or len(out) >= OUT_CHUNK:
                self.write(bytes(out))
                return self._stream_fetches(itertools.chain([pieces], responses))
            out += pieces[0]  # type: ignore[operator]
        self.tagged("OK", f"{self._cmd} completed", bytes(out))
        return None

    @inlineCallbacks
    def _stream_fetches(self, responses: Iterator[fetchmod.Pieces]) -> Deferred[None]:
        """The responses from the first that streams content, then the tagged reply; stops
        (and makes no more) once the connection is closing, as at a revoked login."""
        self._streaming = True
        try:
            yield self._stream_responses(responses)
        finally:
            self._streaming = False

    @inlineCallbacks
    def _stream_responses(self, responses: Iterator[fetchmod.Pieces]) -> Deferred[None]:
        out = bytearray()
        written = 0
        for pieces in responses:
            for piece in pieces:
                if self.closing:
                    return
                if isinstance(piece, bytes):
                    out += piece
                    if len(out) < OUT_CHUNK:
                        continue
                    written += len(out)
                    if written < DRAIN_EVERY:
                        self.write(bytes(out))
                    else:  # let the connection drain before making more
                        yield self.write_chunks(iter([bytes(out)]))
                        written = 0
                    out.clear()
                else:
                    self.write(bytes(out))
                    out.clear()
                    yield self.write_chunks(piece.chunks())
        if not self.closing:
            self.tagged("OK", f"{self._cmd} completed", bytes(out))

    def do_STORE(self, args: list[Token]) -> None:
        by_uid = self._cmd.startswith("UID")
        unchanged_since = None
        if len(args) > 1 and isinstance(args[1], list):
            # RFC 7162 §3.1.3: STORE set (UNCHANGEDSINCE modseq) item flags
            unchanged_since = _modifier(args[1], "UNCHANGEDSINCE")
            args = [args[0], *args[2:]]
            self.enable_condstore()
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
        modified: list[int] = []
        if unchanged_since is not None:
            # Checked and stored in one reactor turn: nothing can change in between.
            failed = {p for p in positions if _modseq_of(sel, p) > unchanged_since}
            modified = [sel.view[p] if by_uid else p + 1 for p in sorted(failed)]
            positions = [p for p in positions if p not in failed]
        uids = [sel.view[p] for p in positions]
        result = sel.folder.store_flags(uids, flags, mode)  # type: ignore[arg-type]
        out = []
        for pos in positions:
            uid = sel.view[pos]
            if uid not in result:
                continue
            modseq = sel.folder.message(uid).modseq
            sel.reported(uid, modseq)
            items = [] if silent else [b"FLAGS " + flag_list(sel.flags_of(uid, result[uid]))]
            if by_uid:
                items.append(b"UID %d" % uid)
            if self.condstore:  # RFC 7162 §3.2: sent even with .SILENT
                items.append(b"MODSEQ (%d)" % modseq)
            if not silent or self.condstore:
                out.append(b"* %d FETCH (%s)\r\n" % (pos + 1, b" ".join(items)))
        if modified:
            text = f"[MODIFIED {format_set(modified)}] Conditional STORE failed"
        else:
            text = f"{self._cmd} completed"
        self.tagged("OK", text, b"".join(out))

    def do_COPY(self, args: list[Token]) -> Deferred[None] | None:
        """COPY and MOVE (RFC 6851), with COPYUID (RFC 4315 §3)."""
        by_uid = self._cmd.startswith("UID")
        moving = self._cmd.endswith("MOVE")
        if len(args) != 2:
            raise ParseError(f"{self._cmd} takes a sequence set and a mailbox")
        sel = self._sel()
        positions = self._positions(args[0], by_uid)
        if self.refuse_shared(self.mailbox_arg(args[1])):
            return None
        try:
            target = self._user().folder(self.mailbox_arg(args[1]))
        except NoSuchFolder:
            self.send(f"{self._tag} NO [TRYCREATE] No such mailbox")
            return None
        uids, size = [], 0
        for uid in (sel.view[p] for p in positions):
            with contextlib.suppress(KeyError):  # expunged meanwhile
                size += sel.folder.message(uid).size
                uids.append(uid)
        if moving and sel.readonly:
            self.send(f"{self._tag} NO [READ-ONLY] Mailbox is read-only")
            return None
        # A move within the account frees what it takes (RFC 6851 §4.4 asks for no more).
        if not moving and not self.ctx.quota.fits(self._user(), size, len(uids)):
            self.send(f"{self._tag} NO [OVERQUOTA] Quota exceeded")
            return None
        return self._copy(sel, uids, target, moving)

    @inlineCallbacks
    def _copy(
        self, sel: SelectedMailbox, uids: list[int], target: Any, moving: bool
    ) -> Deferred[None]:
        if moving:
            pairs = yield sel.folder.move_to(uids, target)
        else:
            pairs = yield sel.folder.copy_to(uids, target)
        code = ""
        if pairs:
            src = format_set([s for s, _ in pairs])
            dst = format_set([d for _, d in pairs])
            code = f"[COPYUID {target.uidvalidity} {src} {dst}] "
        if moving:
            # RFC 6851 §3.3: COPYUID in an untagged OK, then the EXPUNGEs, then the tagged OK.
            if code:
                self.send(f"* OK {code}Moved")
            for line in sel.forget([s for s, _ in pairs]):
                self.send(line)
            self.tagged("OK", f"{self._cmd} completed")
        else:
            self.tagged("OK", f"{code}{self._cmd} completed")

    COMMANDS: dict[str, tuple[Callable[..., Any], frozenset[str]]] = {
        "APPEND": (do_APPEND, AUTHED),
        "CHECK": (do_CHECK, SEL),
        "CLOSE": (do_CLOSE, SEL),
        "EXPUNGE": (do_EXPUNGE, SEL),
        "SEARCH": (do_SEARCH, SEL),
        "FETCH": (do_FETCH, SEL),
        "STORE": (do_STORE, SEL),
        "COPY": (do_COPY, SEL),
        "UID SEARCH": (do_SEARCH, SEL),
        "SORT": (do_SORT, SEL),
        "UID SORT": (do_SORT, SEL),
        "UID FETCH": (do_FETCH, SEL),
        "UID STORE": (do_STORE, SEL),
        "UID COPY": (do_COPY, SEL),
        "MOVE": (do_COPY, SEL),
        "UID MOVE": (do_COPY, SEL),
        "UNSELECT": (do_UNSELECT, SEL),
        "UID EXPUNGE": (do_EXPUNGE, SEL),
    }


def _joined(pieces: fetchmod.Pieces) -> fetchmod.Pieces:
    """Adjacent bytes pieces made one."""
    out: fetchmod.Pieces = []
    for piece in pieces:
        if isinstance(piece, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += piece
        else:
            out.append(piece)
    return out


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


def _modifier(tok: Token, name: str) -> int:
    """The value of a ``(NAME number)`` command modifier (RFC 4466 §2.3, RFC 7162)."""
    if (
        not isinstance(tok, list)
        or len(tok) != 2
        or not isinstance(tok[0], Atom)
        or tok[0].upper() != name
        or not isinstance(tok[1], Atom)
        or not tok[1].isdigit()
    ):
        raise ParseError(f"expected ({name} <mod-sequence>)")
    return int(tok[1])


def _fetch_modifiers(tok: Token) -> tuple[int, bool]:
    """``(CHANGEDSINCE modseq [VANISHED])`` (RFC 7162 §3.1.4.1, §3.2.6)."""
    if isinstance(tok, list) and len(tok) == 3:
        last = tok[2]
        if not (isinstance(last, Atom) and last.upper() == "VANISHED"):
            raise ParseError("expected (CHANGEDSINCE <mod-sequence> [VANISHED])")
        return _modifier(tok[:2], "CHANGEDSINCE"), True
    return _modifier(tok, "CHANGEDSINCE"), False


def _modseq_of(sel: SelectedMailbox, position: int) -> int:
    """A message's MODSEQ; 0 when it was expunged meanwhile (so it never counts as changed)."""
    return _modseq_of_uid(sel, sel.view[position])


def _modseq_of_uid(sel: SelectedMailbox, uid: int) -> int:
    try:
        return sel.folder.message(uid).modseq
    except KeyError:
        return 0


_RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE")


def _search_returns(tok: Token) -> list[str]:
    """RFC 4731 §3.1: the RETURN options; an empty list means ALL."""
    if not isinstance(tok, list) or not all(isinstance(t, Atom) for t in tok):
        raise ParseError("RETURN takes a list of options")
    options = [str(t).upper() for t in tok]
    if any(o not in _RETURN_OPTIONS for o in options):
        raise ParseError("RETURN options are MIN, MAX, ALL, COUNT and SAVE")
    return options or ["ALL"]


def _saved(found: list[int], returns: list[str]) -> set[int]:
    """RFC 5182 §2.1: what SAVE keeps: only MIN and/or MAX when they are the sole other
    options, else every message found (``found``: UIDs, ascending)."""
    if not found or not returns or {"ALL", "COUNT"} & set(returns):
        return set(found)
    return {uid for uid, want in ((found[0], "MIN"), (found[-1], "MAX")) if want in returns}


def _esearch(tag: str, by_uid: bool, returns: list[str], hits: list[int], modseq: int) -> str:
    """RFC 4731 §3.1: ``* ESEARCH (TAG "t") [UID] MIN n MAX n COUNT n ALL set``; MIN, MAX
    and ALL are left out when nothing matched, and MODSEQ added after a MODSEQ search
    (RFC 7162 §3.1.5)."""
    parts = [f'* ESEARCH (TAG "{tag}")'] + (["UID"] if by_uid else [])
    if hits and "MIN" in returns:
        parts.append(f"MIN {hits[0]}")
    if hits and "MAX" in returns:
        parts.append(f"MAX {hits[-1]}")
    if "COUNT" in returns:
        parts.append(f"COUNT {len(hits)}")
    if hits and "ALL" in returns:
        parts.append(f"ALL {format_set(hits)}")
    if hits and modseq:
        parts.append(f"MODSEQ {modseq}")
    return " ".join(parts)


def _append_groups(tokens: list[Token]) -> list[tuple[list[str], float | None, bytes]]:
    """``[flags] [date-time] literal`` repeated (RFC 3502 §6.3.11); a string is a date when a
    message follows it in the same group."""
    groups = []
    i = 0
    while i < len(tokens):
        flags: list[str] = []
        date = None
        if isinstance(tokens[i], list):
            flags = _flags(tokens[i])  # type: ignore[arg-type]
            i += 1
        if (
            i + 1 < len(tokens)
            and isinstance(tokens[i], bytes)
            and isinstance(tokens[i + 1], bytes)
        ):
            text = tokens[i].decode("ascii", "replace")  # type: ignore[union-attr]
            if _DATE_TIME_RE.match(text):
                date = parse_date_time(text)
                i += 1
        token = tokens[i] if i < len(tokens) else None
        if isinstance(token, Atom) and token.upper() == "UTF8" and i + 1 < len(tokens):
            # RFC 6855 §4: UTF8 (literal8), a message with UTF-8 header fields.
            inner = tokens[i + 1]
            if not isinstance(inner, list) or len(inner) != 1:
                raise ParseError("APPEND UTF8 takes (literal8)")
            token = inner[0]
            i += 1
        if not isinstance(token, bytes):
            raise ParseError("APPEND takes [flags] [date-time] and a message literal, repeated")
        groups.append((flags, date, token))
        i += 1
    if not groups:
        raise ParseError("APPEND needs a message")
    return groups


#: Octets of a message's header section read for its addressees (the rest is not looked at).
ADDRESSEE_HEADER_LIMIT = 256 * 1024


def addressees(message: bytes) -> tuple[str, ...]:
    """The addresses in a message's To, Cc and Bcc fields (RFC 5322 §3.6.3), in order, each
    once; unparsable ones are left out."""
    head = message[:ADDRESSEE_HEADER_LIMIT]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    fields = [str(v) for name in ("to", "cc", "bcc") for v in parsed.get_all(name, [])]
    found = (address for _, address in email.utils.getaddresses(fields) if "@" in address)
    return tuple(dict.fromkeys(found))


def _special_use(user: IUserStore, name: str) -> str | None:
    """The RFC 6154 special use of folder ``name`` as LIST shows it: the stored one, else the
    default folders' (a ``Sent`` made by a migration or a plain CREATE is still \\Sent)."""
    return user.special_uses().get(name) or DEFAULT_FOLDERS.get(name)
