"""IMAP mailbox commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST,
LSUB, STATUS (RFC 3501 §6.3), NAMESPACE (RFC 2342).

LIST shows ``\\HasChildren``/``\\HasNoChildren`` (CHILDREN, RFC 3348) and the folders' special
use (RFC 6154): the one given at CREATE (CREATE-SPECIAL-USE), else that of a standard folder name
(Sent, Drafts, Trash, Junk, Archive), for accounts made before uses were recorded."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ourmail.imap.search import resolve_pos_uids
from ourmail.imap.selected import SelectedMailbox
from ourmail.imap.sequence import Ranges, parse_set
from ourmail.imap.states import AUTHED, SELECTED
from ourmail.imap.wire import (
    Atom,
    ParseError,
    Token,
    astring,
    flag_list,
)
from ourmail.interfaces import DEFAULT_FOLDERS, BadFolderName
from ourmail.mailflags import SYSTEM_FLAGS

#: RFC 6154 §2 uses a real folder can have (\\All and \\Flagged would be virtual folders).
USES = {"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"}


class MailboxCommands:
    """Commands on mailboxes as a whole (a mixin of :class:`~ourmail.imap.server.IMAPServer`)."""

    def do_SELECT(self, args: list[Token]) -> None:
        """SELECT and EXAMINE, with the CONDSTORE and QRESYNC parameters (RFC 7162 §3.1.8,
        §3.2.5) and the IMAP4rev2 responses (RFC 9051 §6.3.2)."""
        resync = None
        if len(args) == 2 and isinstance(args[1], list):
            resync = self._select_params(args[1])
            args = args[:1]
        if len(args) != 1:
            raise ParseError(f"{self._cmd} takes one mailbox")
        name = self.mailbox_arg(args[0])
        # A shared folder is read-only: SELECT answers [READ-ONLY] (RFC 3501 §6.3.1); the
        # user's own folders (also one named like a shared one) keep their rights.
        shared = self.shared_folder(name) is not None
        readonly = self._cmd == "EXAMINE" or shared
        if self.selected is not None and (self.qresync or self.rev2):
            self.send("* OK [CLOSED] Previous mailbox closed")  # RFC 7162 §3.2.11
        self._deselect()
        user = self._user()
        folder = self.open_folder(name)
        folder.sync()
        recent = set() if readonly or self.rev2 else set(folder.claim_recent())
        sel = SelectedMailbox(folder, readonly, recent)
        sel.shared = name if shared else ""
        sel.condstore, sel.qresync, sel.rev2 = self.condstore, self.qresync, self.rev2
        flags = " ".join(sorted(SYSTEM_FLAGS) + folder.keywords())
        self.send(f"* FLAGS ({flags})")
        permanent = "" if readonly else f"{flags} \\*"
        self.send(f"* OK [PERMANENTFLAGS ({permanent})] Flags permitted")
        self.send(f"* {len(sel.view)} EXISTS")
        if self.rev2 and shared:
            self._list_line(["\\HasNoChildren"], name)
        elif self.rev2:
            names = user.list_folders()
            self._list_line(_attributes(folder.name, names, self._uses(names)), folder.name)
        else:
            self.send(f"* {len(recent)} RECENT")
            first_unseen = folder.first_unseen()
            if first_unseen is not None:
                self.send(f"* OK [UNSEEN {sel.seq_of(first_unseen)}] First unseen message")
        self.send(f"* OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid")
        self.send(f"* OK [UIDNEXT {folder.uidnext}] Predicted next UID")
        self.send(f"* OK [HIGHESTMODSEQ {folder.highestmodseq}] Highest")  # RFC 7162 §3.1.2.1
        if resync is not None and resync[0] == folder.uidvalidity:
            self._resync(sel, resync[1], resync[2])
        self.selected = sel
        self.state = SELECTED
        self.tagged("OK", f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {self._cmd} completed")

    def _select_params(self, params: list[Token]) -> tuple[int, int, Ranges | None] | None:
        """RFC 4466 select parameters: CONDSTORE, and ``QRESYNC (uidvalidity modseq
        [known-uids [seq-match-data]])`` (RFC 7162 §3.2.5); the QRESYNC values, if any."""
        resync = None
        i = 0
        while i < len(params):
            name = params[i]
            if isinstance(name, Atom) and name.upper() == "CONDSTORE":
                self.enable_condstore()
                i += 1
            elif isinstance(name, Atom) and name.upper() == "QRESYNC" and i + 1 < len(params):
                if not self.qresync:
                    raise ParseError("ENABLE QRESYNC first")  # RFC 7162 §3.2.5
                resync = _qresync_values(params[i + 1])
                i += 2
            else:
                raise ParseError("SELECT parameters are CONDSTORE and QRESYNC")
        return resync

    def _resync(self, sel: SelectedMailbox, modseq: int, known: Ranges | None) -> None:
        """RFC 7162 §3.2.5.1: what the client missed since ``modseq``: a VANISHED (EARLIER)
        response, then the flags of every message changed since."""
        gone = sel.vanished_since(modseq, known)
        if gone:
            self.send(f"* VANISHED (EARLIER) {gone}")
        folder = sel.folder
        changed = folder.changes_since(modseq)
        uids = folder.uids() if changed is None else sorted(set(changed))
        wanted = None if known is None else set(resolve_pos_uids(known, sel.view))
        for uid in uids:
            seq = sel.seq_of(uid)
            if seq is None or (wanted is not None and uid not in wanted):
                continue
            msg = folder.message(uid)
            if msg.modseq > modseq:
                flags = flag_list(sel.flags_of(uid, msg.flags)).decode()
                self.send(f"* {seq} FETCH (UID {uid} FLAGS {flags} MODSEQ ({msg.modseq}))")

    def _uses(self, names: list[str]) -> dict[str, str]:
        """Folder name -> RFC 6154 special use, for the folders in ``names``."""
        existing = set(names)
        defaults = {n: u for n, u in DEFAULT_FOLDERS.items() if n in existing}
        return defaults | self._user().special_uses()

    def do_CREATE(self, args: list[Token]) -> None:
        """CREATE, with the USE parameter of CREATE-SPECIAL-USE (RFC 6154 §3)."""
        use = None
        if len(args) == 2:
            use = _use_param(args[1])
            if use not in USES:
                self.send(f"{self._tag} NO [USEATTR] Unsupported special use")
                return
        elif len(args) != 1:
            raise ParseError("CREATE takes one mailbox and optional parameters")
        name = self.mailbox_arg(args[0])
        if self.refuse_own_in_shared(name):
            return
        try:
            self._user().create_folder(name, use)
        except BadFolderName as e:
            self.send(f"{self._tag} NO [CANNOT] {e}")
            return
        self.tagged("OK", "CREATE completed")

    def do_DELETE(self, args: list[Token]) -> None:
        if len(args) != 1:
            raise ParseError("DELETE takes one mailbox")
        name = self.mailbox_arg(args[0])
        if self.refuse_shared(name):
            return
        sel = self.selected
        if sel is not None and not sel.shared and sel.folder.name == name:
            self._deselect()
        self._user().delete_folder(name)
        self.tagged("OK", "DELETE completed")

    def do_RENAME(self, args: list[Token]) -> None:
        if len(args) != 2:
            raise ParseError("RENAME takes two mailboxes")
        old, new = self.mailbox_arg(args[0]), self.mailbox_arg(args[1])
        if self.refuse_shared(old) or self.refuse_own_in_shared(new):
            return
        try:
            self._user().rename_folder(old, new)
        except BadFolderName as e:
            self.send(f"{self._tag} NO [CANNOT] {e}")
            return
        self.tagged("OK", "RENAME completed")

    def do_SUBSCRIBE(self, args: list[Token]) -> None:
        if len(args) != 1:
            raise ParseError(f"{self._cmd} takes one mailbox")
        name = self.mailbox_arg(args[0])
        if self._cmd == "SUBSCRIBE":
            self._user().subscribe(name)
        else:
            self._user().unsubscribe(name)
        self.tagged("OK", f"{self._cmd} completed")

    def do_LIST(self, args: list[Token]) -> None:
        """LIST, with LIST-EXTENDED (RFC 5258) selection and return options, LIST-STATUS
        (RFC 5819) and the SPECIAL-USE options (RFC 6154); and LSUB."""
        if self._cmd == "LSUB":
            self._lsub(args)
            return
        selection: set[str] = set()
        if args and isinstance(args[0], list):
            selection = {_option(t) for t in args[0]}
            args = args[1:]
            if not selection <= _SELECTION or selection == {"RECURSIVEMATCH"}:
                raise ParseError("bad LIST selection options")  # RFC 5258 §3.1
        returns: set[str] = set()
        status_items: list[Token] | None = None
        if len(args) == 4 and isinstance(args[2], Atom) and args[2].upper() == "RETURN":
            returns, status_items = _list_returns(args[3])
            args = args[:2]
        if len(args) != 2:
            raise ParseError("LIST takes a reference and a pattern")
        patterns = args[1] if isinstance(args[1], list) else [args[1]]
        if not patterns:
            raise ParseError("LIST needs a pattern")
        if len(patterns) == 1 and not astring(patterns[0]) and not selection:
            self.send('* LIST (\\Noselect) "/" ""')  # RFC 3501 §6.3.8: the delimiter
            self.tagged("OK", "LIST completed")
            return
        matches = self._matcher(args[0], patterns)

        user = self._user()
        own = user.list_folders()
        names = self.with_shared(own)
        existing = set(names)
        subscribed = set(user.subscriptions())
        if "SUBSCRIBED" in selection:
            candidates = sorted(subscribed, key=lambda n: (n != "INBOX", n))
        else:
            candidates = names
        uses = self._uses(own)
        if "SPECIAL-USE" in selection:
            candidates = [n for n in candidates if n in uses]
        show_subscribed = "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
        listed = set()
        for name in candidates:
            if not matches(name):
                continue
            listed.add(name)
            # RFC 5258 §3: \\NonExistent implies \\Noselect
            attrs_ = _attributes(name, names, uses) if name in existing else ["\\NonExistent"]
            parent = self.shared_part(name) == "" and name not in own
            if parent and name in existing:
                attrs_.insert(0, "\\Noselect")  # the shared namespace's root (RFC 3501 §7.2.2)
            if show_subscribed and name in subscribed:
                attrs_.insert(1, "\\Subscribed")
            self._list_line(attrs_, name)
            if status_items is not None and name in existing and not parent:
                self.send(self._status_line(name, status_items))  # RFC 5819 §2
        if "RECURSIVEMATCH" in selection:
            # RFC 5258 §3.5: a parent matching the pattern that is not selected itself but has
            # a selected descendant (which need not match).
            for parent in sorted({p for n in candidates for p in _parents(n)} - listed):
                if matches(parent):
                    attrs_ = [] if parent in existing else ["\\NonExistent"]
                    self._list_line(attrs_, parent, b' ("CHILDINFO" ("SUBSCRIBED"))')
        self.tagged("OK", "LIST completed")

    def _matcher(self, reference: Token, patterns: list[Token]) -> Callable[[str], bool]:
        """Whether a mailbox name matches any of the patterns after the reference (RFC 3501
        §6.3.8); INBOX matches case-insensitively."""
        ref = self.mailbox_arg(reference) if astring(reference) else ""
        regexes = [_list_regex(ref + self.mailbox_arg(p) if astring(p) else ref) for p in patterns]

        def matches(name: str) -> bool:
            return any(r.match(name) or (name == "INBOX" and r.match("inbox")) for r in regexes)

        return matches

    def _list_line(self, attrs_: list[str], name: str, extra: bytes = b"") -> None:
        self.send(
            b"* LIST (" + " ".join(attrs_).encode() + b') "/" ' + self.mailbox_bytes(name) + extra
        )

    def _lsub(self, args: list[Token]) -> None:
        if len(args) != 2:
            raise ParseError("LSUB takes a reference and a pattern")
        matches = self._matcher(args[0], [args[1]])
        user = self._user()
        existing = set(self.with_shared(user.list_folders()))
        for name in user.subscriptions():
            if matches(name):
                attrs_ = "" if name in existing else "\\Noselect"
                self.send(b"* LSUB (" + attrs_.encode() + b') "/" ' + self.mailbox_bytes(name))
        self.tagged("OK", "LSUB completed")

    def do_NAMESPACE(self, args: list[Token]) -> None:
        """RFC 2342: one personal namespace, no prefix, "/" as the delimiter; no other users';
        the shared one (the lists' archives, ``Lists/``) when there is one."""
        if args:
            raise ParseError("NAMESPACE takes no arguments")
        shared = self.ctx.shared
        others = "NIL"
        if shared is not None:
            others = '(("' + shared.prefix + '/" "/"))'
        self.send(f'* NAMESPACE (("" "/")) NIL {others}')
        self.tagged("OK", "NAMESPACE completed")

    def _quota_line(self) -> bytes | None:
        """``* QUOTA "" (STORAGE used limit MESSAGE used limit)`` (RFC 9208 §5.1): one quota
        root, named "", for the whole account; None when the account has no limit."""
        user = self._user()
        limit = self.ctx.quota.limit(user.address)
        if limit.bytes is None and limit.messages is None:
            return None
        used = self.ctx.quota.usage(user)
        resources = []
        if limit.bytes is not None:  # STORAGE counts units of 1024 octets
            resources.append(f"STORAGE {(used.bytes + 1023) // 1024} {limit.bytes // 1024}")
        if limit.messages is not None:
            resources.append(f"MESSAGE {used.messages} {limit.messages}")
        return f'* QUOTA "" ({" ".join(resources)})'.encode()

    def do_GETQUOTAROOT(self, args: list[Token]) -> None:
        if len(args) != 1:
            raise ParseError("GETQUOTAROOT takes a mailbox")
        name = self.mailbox_arg(args[0])
        self._user().folder(name)  # NO [NONEXISTENT] for a mailbox that does not exist
        line = self._quota_line()
        self.send(b"* QUOTAROOT " + self.mailbox_bytes(name) + (b' ""' if line else b""))
        if line:
            self.send(line)
        self.tagged("OK", "GETQUOTAROOT completed")

    def do_GETQUOTA(self, args: list[Token]) -> None:
        if len(args) != 1:
            raise ParseError("GETQUOTA takes a quota root")
        line = self._quota_line()
        if astring(args[0]) != b"" or line is None:
            self.send(f"{self._tag} NO [NONEXISTENT] No such quota root")
            return
        self.send(line)
        self.tagged("OK", "GETQUOTA completed")

    def do_SETQUOTA(self, args: list[Token]) -> None:
        """Limits are the admin's (``ourmail user quota``); QUOTASET is not offered."""
        self.send(f"{self._tag} NO [NOPERM] Quotas are set by the administrator")

    def do_STATUS(self, args: list[Token]) -> None:
        if len(args) != 2 or not isinstance(args[1], list):
            raise ParseError("STATUS takes a mailbox and a list of items")
        self.send(self._status_line(self.mailbox_arg(args[0]), args[1]))
        self.tagged("OK", "STATUS completed")

    def _status_line(self, name: str, items: list[Token]) -> bytes:
        """``* STATUS name (ITEM value ...)`` (RFC 3501 §6.3.10)."""
        folder = self.open_folder(name)
        folder.sync()
        values = []
        for item in items:
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
            elif key == "SIZE":  # RFC 8438
                value = folder.total_size
            elif key == "HIGHESTMODSEQ":  # RFC 7162 §3.1.9
                self.enable_condstore()
                value = folder.highestmodseq
            elif key == "APPENDLIMIT":  # RFC 7889 §3
                value = self.ctx.limits.max_message_size
            elif key in ("DELETED", "DELETED-STORAGE"):  # RFC 9051 §6.3.11, RFC 9208 §4.2.4
                deleted = [m for m in map(folder.message, folder.uids()) if "\\Deleted" in m.flags]
                value = len(deleted) if key == "DELETED" else sum(m.size for m in deleted)
            else:
                raise ParseError(f"unknown STATUS item {key or item!r}")
            values.append(f"{key} {value}")
        return b"* STATUS " + self.mailbox_bytes(name) + f" ({' '.join(values)})".encode()

    COMMANDS: dict[str, tuple[Callable[..., Any], frozenset[str]]] = {
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
        "NAMESPACE": (do_NAMESPACE, AUTHED),
        "GETQUOTAROOT": (do_GETQUOTAROOT, AUTHED),
        "GETQUOTA": (do_GETQUOTA, AUTHED),
        "SETQUOTA": (do_SETQUOTA, AUTHED),
    }


def _list_regex(pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8 wildcards: ``*`` matches anything, ``%`` anything but the delimiter."""
    parts = [".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern]
    return re.compile("^" + "".join(parts) + "$")


def _attributes(name: str, names: list[str], uses: dict[str, str]) -> list[str]:
    """The LIST attributes of an existing folder: CHILDREN (RFC 3348) and its special use."""
    has_children = any(n.startswith(name + "/") for n in names)
    attrs_ = ["\\HasChildren" if has_children else "\\HasNoChildren"]
    return attrs_ + ([uses[name]] if name in uses else [])


def _qresync_values(tok: Token) -> tuple[int, int, Ranges | None]:
    """``(uidvalidity mod-sequence [known-uids [(known-seqs known-uids)]])``; the optional
    sequence match data is checked for syntax only (it is a hint, RFC 7162 §3.2.5.2)."""
    if not isinstance(tok, list) or not 2 <= len(tok) <= 4:
        raise ParseError("QRESYNC takes (uidvalidity modseq [known-uids [match-data]])")
    if not all(isinstance(t, Atom) and t.isdigit() for t in tok[:2]):
        raise ParseError("QRESYNC uidvalidity and modseq are numbers")
    known = None
    if len(tok) >= 3:
        if not isinstance(tok[2], Atom):
            raise ParseError("bad QRESYNC known UIDs")
        known = parse_set(str(tok[2]))
    if len(tok) == 4:
        match = tok[3]
        if not isinstance(match, list) or len(match) != 2:
            raise ParseError("bad QRESYNC sequence match data")
        for part in match:
            parse_set(str(part) if isinstance(part, Atom) else "")
    return int(str(tok[0])), int(str(tok[1])), known


def _use_param(tok: Token) -> str:
    """The attribute of a ``(USE (\\Attr))`` CREATE parameter (RFC 6154 §6, RFC 4466 §2.2);
    more than one attribute is refused as an unsupported combination."""
    if (
        not isinstance(tok, list)
        or len(tok) != 2
        or not isinstance(tok[0], Atom)
        or tok[0].upper() != "USE"
        or not isinstance(tok[1], list)
        or not all(isinstance(t, Atom) for t in tok[1])
    ):
        raise ParseError("the only CREATE parameter is (USE (attributes))")
    attrs_ = ["\\" + t[1:].capitalize() if t.startswith("\\") else t for t in map(str, tok[1])]
    return attrs_[0] if len(attrs_) == 1 else ""


_SELECTION = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
_RETURNS = {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"}


def _option(tok: Token) -> str:
    if not isinstance(tok, Atom):
        raise ParseError("LIST options are atoms")
    return tok.upper()


def _list_returns(tok: Token) -> tuple[set[str], list[Token] | None]:
    """RFC 5258 §3.2 return options; STATUS takes its item list (RFC 5819)."""
    if not isinstance(tok, list):
        raise ParseError("RETURN takes a list of options")
    returns: set[str] = set()
    status: list[Token] | None = None
    items = iter(tok)
    for item in items:
        option = _option(item)
        if option not in _RETURNS:
            raise ParseError(f"unknown LIST return option {option}")
        if option == "STATUS":
            status = next(items, None)  # type: ignore[assignment]
            if not isinstance(status, list) or not status:
                raise ParseError("RETURN (STATUS (...)) needs status items")
        returns.add(option)
    return returns, status


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
