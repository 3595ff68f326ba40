"""IMAP mailbox commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST,
LSUB, STATUS (RFC 3501 §6.3), NAMESPACE (RFC 2342).

LIST shows ``\\HasChildren``/``\\HasNoChildren`` (CHILDREN, RFC 3348) and marks the standard
folders with their special use (RFC 6154): Sent, Drafts, Trash, Junk, Archive."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ourmail.imap.selected import SelectedMailbox
from ourmail.imap.states import AUTHED, SELECTED
from ourmail.imap.wire import (
    Atom,
    ParseError,
    Token,
    astring,
    mailbox_name,
    mailbox_out,
)
from ourmail.interfaces import (
    BadFolderName,
)
from ourmail.store.maildir import SYSTEM_FLAGS

#: RFC 6154 attributes of the folders every account gets (``ensure_default_folders``).
SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


class MailboxCommands:
    """Commands on mailboxes as a whole (a mixin of :class:`~ourmail.imap.server.IMAPServer`)."""

    def do_SELECT(self, args: list[Token]) -> None:
        if len(args) == 2 and isinstance(args[1], list):
            # RFC 4466 select parameters; CONDSTORE (RFC 7162 §3.1.8) is the one we know.
            params = [p.upper() for p in args[1] if isinstance(p, Atom)]
            if params != ["CONDSTORE"] or len(args[1]) != 1:
                raise ParseError("the only SELECT parameter is CONDSTORE")
            self.enable_condstore()
            args = args[:1]
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
        self.send(f"* OK [HIGHESTMODSEQ {folder.highestmodseq}] Highest")  # RFC 7162 §3.1.2.1
        sel.condstore = self.condstore
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
                if name in SPECIAL_USE:
                    attrs_.append(SPECIAL_USE[name])
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

    def do_NAMESPACE(self, args: list[Token]) -> None:
        """RFC 2342: one personal namespace, no prefix, "/" as the delimiter; nothing shared."""
        if args:
            raise ParseError("NAMESPACE takes no arguments")
        self.send('* NAMESPACE (("" "/")) NIL NIL')
        self.tagged("OK", "NAMESPACE completed")

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
            elif key == "SIZE":  # RFC 8438
                value = folder.total_size
            elif key == "HIGHESTMODSEQ":  # RFC 7162 §3.1.9
                self.enable_condstore()
                value = folder.highestmodseq
            elif key == "APPENDLIMIT":  # RFC 7889 §3
                value = self.ctx.limits.max_message_size
            else:
                raise ParseError(f"unknown STATUS item {key or item!r}")
            values.append(f"{key} {value}")
        self.send(b"* STATUS " + mailbox_out(name) + f" ({' '.join(values)})".encode())
        self.tagged("OK", "STATUS completed")

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
    }


def _list_regex(pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8 wildcards: ``*`` matches anything, ``%`` anything but the delimiter."""
    parts = [".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern]
    return re.compile("^" + "".join(parts) + "$")
