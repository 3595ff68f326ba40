"""The shared namespace (RFC 2342): folders others share with the user, read-only.

With an :class:`~ourmail.interfaces.ISharedFolders` (the mailing lists' archives), the names
``<prefix>/<name>`` are its folders, looked up through ``ISharedFolders.folder(user, name)``
for the logged-in user only, so a shared name reaches nothing else.  ``<prefix>`` itself is a
``\\Noselect`` parent (RFC 3501 §7.2.2).  Shared folders are read-only (``[READ-ONLY]``,
``NO [NOPERM]``), and one the user may not read answers exactly as one that does not exist.
The user's own folders cannot be made or renamed under the prefix; those made there before (a
``Lists`` folder of one's own is common) stay the user's, in their own store, beside the
shared ones.  When one of them has the very name of a shared folder, the user's own folder
wins: it is what SELECT, STATUS, APPEND, DELETE and LIST reach (read-write, as any of the
user's folders), and the shared one is not shown under that name until the user renames
theirs.  So a folder of the user's own is never hidden, nor made read-only, by an archive.

Access is checked again on every command while a shared folder is selected (from the
archives' table in memory, which the list service refreshes when members change): once the
user may no longer read it (unsubscribed, the list made private or deleted), each command
that reads the folder answers ``NO [NOPERM]`` and no more untagged updates are sent; CLOSE,
UNSELECT, SELECT, EXAMINE and LOGOUT still work (RFC 9051 §7.1, NOPERM).  A selected
shared folder that is gone from the store ends the session with ``BYE`` (RFC 3501 §7.1.5).
"""

from __future__ import annotations

from ourmail.imap.states import SEL
from ourmail.interfaces import IFolder, NoSuchFolder, ShardMoving, SharedFolder, StoreError

#: Commands valid only in the selected state that do not read the selected folder: they
#: still run once the user may no longer read it (all the others answer NO).
WITHOUT_READING = frozenset({"CLOSE", "UNSELECT"})
#: Commands of any state that read the selected folder (they report its changes).
READING = frozenset({"NOOP", "IDLE"})


class SharedNamespace:
    """Mailbox name resolution with the shared namespace (a mixin of
    :class:`~ourmail.imap.server.IMAPServer`)."""

    def shared_part(self, name: str) -> str | None:
        """For a name in the shared namespace, what follows ``<prefix>/`` ("" for the prefix
        itself); None for the user's own folders (or when nothing is shared)."""
        shared = self.ctx.shared
        if shared is None:
            return None
        prefix: str = shared.prefix
        if name == prefix:
            return ""
        if name.startswith(prefix + "/"):
            return name[len(prefix) + 1 :]
        return None

    def shared_folder(self, name: str) -> SharedFolder | None:
        """The shared folder named ``name`` (in the namespace) if the user may read it and
        has no folder of their own of that name (their own wins)."""
        part = self.shared_part(name)
        if not part or self._own_exists(name):
            return None
        found: SharedFolder | None = self.ctx.shared.folder(self._user().address, part)
        return found

    def _own_exists(self, name: str) -> bool:
        """Whether the user has a folder of their own named ``name``."""
        try:
            self._user().folder(name)
        except NoSuchFolder:
            return False
        return True

    def selection_readable(self, command: str) -> bool:
        """Check again, before ``command`` runs, that a selected shared folder is still the
        user's to read; if not, answer (``BYE`` when the folder is gone from the store,
        ``NO [NOPERM]`` for a command that would read it when the user may no longer) and
        return False.  True when the command may run."""
        sel = self.selected
        if sel is None or not sel.shared:
            return True
        if not sel.revoked:
            try:
                sel.folder.sync()
            except ShardMoving:
                return True  # the command answers NO [UNAVAILABLE] itself
            except StoreError:
                self.say_bye(f"[NONEXISTENT] {sel.shared} is gone")  # RFC 3501 §7.1.5
                return False
            self._synced = True
        if not self.selection_revoked() or command in WITHOUT_READING:
            return True
        if self.COMMANDS[command][1] != SEL and command not in READING:
            return True  # it does not read the selected folder
        self.send(
            f"{self._tag} NO [NOPERM] You may no longer read {sel.shared}; select another mailbox"
        )
        return False

    def selection_revoked(self) -> bool:
        """Whether the user may no longer read the selected shared folder (asked of the
        archives' table in memory); once so, it stays so for this selection, and nothing
        more is reported from it (RFC 9051 §7.1, NOPERM)."""
        sel = self.selected
        if sel is None or not sel.shared:
            return False
        if not sel.revoked and self.shared_folder(sel.shared) is None:
            sel.revoked = True
        revoked: bool = sel.revoked
        return revoked

    def open_folder(self, name: str) -> IFolder:
        """The folder a mailbox name stands for: the user's own, or a shared one;
        :class:`NoSuchFolder` when there is none (or it is not the user's to read)."""
        shared = self.shared_folder(name)
        if shared is not None:
            return shared.folder
        folder: IFolder = self._user().folder(name)  # NoSuchFolder when there is none
        return folder

    def shared_names(self) -> list[str]:
        """The names LIST shows in the shared namespace: the prefix and the user's shared
        folders under it; none when nothing is shared with the user."""
        shared = self.ctx.shared
        if shared is None:
            return []
        names = [f"{shared.prefix}/{f.name}" for f in shared.folders(self._user().address)]
        return [shared.prefix, *names] if names else []

    def with_shared(self, own: list[str]) -> list[str]:
        """The user's own folder names followed by the shared ones (those not also own)."""
        mine = set(own)
        return own + [n for n in self.shared_names() if n not in mine]

    def refuse_shared(self, name: str) -> bool:
        """Answer NO to a change of ``name`` (DELETE, RENAME, APPEND, COPY into) when it is in
        the shared namespace, and say so: ``[NOPERM]`` when the user sees it (RFC 5530),
        as a missing mailbox when not.  False for the user's own folders."""
        part = self.shared_part(name)
        if part is None:
            return False
        own = self._user().list_folders()
        if self.shared_folder(name) is not None or (
            not part and name not in own and self.shared_names()
        ):
            self.send(f"{self._tag} NO [NOPERM] Shared folders are read-only")
        elif name in own:
            return False  # the user's own folder, made there before
        else:
            self.send(f"{self._tag} NO [NONEXISTENT] No such mailbox")
        return True

    def refuse_own_in_shared(self, name: str) -> bool:
        """Answer NO to making (CREATE, RENAME to) a folder of the user's own under the
        shared prefix; False when ``name`` is outside it."""
        if self.shared_part(name) is None:
            return False
        prefix = self.ctx.shared.prefix
        self.send(f"{self._tag} NO [CANNOT] {prefix} holds shared folders; choose another name")
        return True
